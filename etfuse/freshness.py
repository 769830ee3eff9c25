"""Is the data on time?  Overdue sources, a stale product, and the dead-man's-switch ping.

* A source is **overdue** when its newest stored day ended longer ago than its allowed delay
  (``settings.freshness.<source>_days``, counted from the end of the data day).  The alert
  (``overdue``, warning) is raised once per ``freshness.alert_every_hours`` while the condition
  lasts (etfuse/alerts/once.py), not on every run; when the source catches up the condition is
  forgotten, so the next lapse alerts again.  A source never delivered is not measured here
  (the fetch side reports "nothing fetched").
* The **product** is stale when its newest day is older than ``freshness.product_days``; the API's
  ``/ready`` reports it.
* The **dead-man's switch**: after each successful daily run, ``freshness.heartbeat_url`` (e.g. a
  healthchecks.io check) gets a GET; when runs stop, that service raises the alarm, which no alert
  from inside a stopped pipeline could.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import pandas as pd

from etfuse.alerts import Alert, AlertDispatcher
from etfuse.alerts.once import OnceLedger
from etfuse.clock import utcnow  # the clock of this module (tests freeze it by replacing etfuse.freshness.utcnow)
from etfuse.settings import Settings
from etfuse.store import HarmonisedStore

log = logging.getLogger(__name__)

#: the data sources with a freshness setting (``product`` is the product's own)
SOURCES = ("era5land", "modis", "cma", "gleam", "stations", "fluxnet")


def age_days(newest_day: pd.Timestamp | dt.date, now: dt.datetime) -> float:
    """How long ago the data day ``newest_day`` ended [days]."""
    end = pd.Timestamp(newest_day).normalize().tz_localize(None) + pd.Timedelta(days=1)
    t = pd.Timestamp(now)
    t = t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t
    return (t - end) / pd.Timedelta(days=1)


@dataclass(frozen=True)
class SourceFreshness:
    source: str
    newest_day: pd.Timestamp | None
    age_days: float | None
    allowed_days: float | None

    @property
    def overdue(self) -> bool:
        return (self.allowed_days is not None and self.age_days is not None
                and self.age_days > self.allowed_days)


def source_freshness(store: HarmonisedStore, settings: Settings, now: dt.datetime) -> list[SourceFreshness]:
    """Newest stored day, its age and the allowed delay of every source."""
    newest: dict[str, pd.Timestamp] = {}
    summary = store.summary()
    for row in summary.to_dict("records") if not summary.empty else []:
        newest[row["source"]] = pd.Timestamp(row["last_day"])
    out = []
    for source in SOURCES:
        day = newest.get(source)
        out.append(SourceFreshness(source, day, None if day is None else round(age_days(day, now), 3),
                                   settings.freshness.expected_delay_days(source)))
    return out


def check_overdue(store: HarmonisedStore, settings: Settings, dispatcher: AlertDispatcher,
                  now: dt.datetime | None = None) -> list[Alert]:
    """An ``overdue`` warning per late source, once per ``freshness.alert_every_hours``."""
    now = now or utcnow()
    once = OnceLedger.for_settings(settings)
    window = dt.timedelta(hours=settings.freshness.alert_every_hours)
    sent = []
    for f in source_freshness(store, settings, now):
        key = f"overdue:{f.source}"
        if not f.overdue:
            once.clear(key)
            continue
        if not once.due(key, now, window):
            continue
        alert = Alert(severity="warning", source=f.source, kind="overdue", checks=["freshness"],
                      days=[f"{f.newest_day:%Y-%m-%d}"],
                      summary=(f"{f.source} is overdue: the newest stored day {f.newest_day:%Y-%m-%d} ended "
                               f"{f.age_days:.1f} days ago; allowed {f.allowed_days:g} days "
                               f"(freshness.{f.source}_days)"),
                      details={"newest_day": f"{f.newest_day:%Y-%m-%d}", "age_days": f.age_days,
                               "allowed_days": f.allowed_days})
        dispatcher.send(alert)
        sent.append(alert)
    return sent


def product_staleness(days: list[pd.Timestamp], settings: Settings, now: dt.datetime | None = None) -> dict:
    """``{"newest_day", "age_days", "allowed_days", "stale"}`` of the product (its stored days)."""
    now = now or utcnow()
    allowed = settings.freshness.expected_delay_days("product")
    if not days:
        return {"newest_day": None, "age_days": None, "allowed_days": allowed, "stale": allowed is not None}
    newest = max(days)
    age = round(age_days(newest, now), 3)
    return {"newest_day": f"{newest:%Y-%m-%d}", "age_days": age, "allowed_days": allowed,
            "stale": allowed is not None and age > allowed}


def ping_heartbeat(settings: Settings) -> bool | None:
    """GET ``freshness.heartbeat_url`` (None: not configured).  Retried with doubling back-off; a
    failure is logged and returns False, never raised: the run itself succeeded."""
    url = settings.freshness.heartbeat_url
    if not url:
        return None
    f = settings.freshness
    for attempt in range(1 + f.heartbeat_retries):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "etfuse-heartbeat/1"}),
                                        timeout=f.heartbeat_timeout_s) as response:
                response.read(1024)
                if 200 <= response.status < 300:
                    return True
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.warning("heartbeat ping attempt %d failed: %s", attempt + 1, exc)
        if attempt < f.heartbeat_retries:
            time.sleep(f.heartbeat_backoff_s * 2 ** attempt)
    log.warning("heartbeat ping failed after %d attempts; the dead-man's switch will report a missed run",
                1 + f.heartbeat_retries)
    return False
