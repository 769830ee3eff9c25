"""One fetch run: for each source, plan what is new, download it, record it, and alert.

Alerts (docs/alerts.md): ``fetch_failed`` (critical) when a source cannot be fetched (wrong or
missing credentials, quota, a refused request, a provider down after every retry), and
``fetch_overdue`` (warning) when a source has brought nothing new for longer than its
``freshness.<source>_days``.  One fetch per source at a time (a lock file beside the ledger); a
second one started meanwhile skips that source.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from etfuse.alerts import Alert, AlertDispatcher
from etfuse.clock import utcnow
from etfuse.fetch import FetchItem, Progress, fetcher_names, get_fetcher
from etfuse.fetch.download import fetch_item
from etfuse.fetch.errors import FetchError
from etfuse.fetch.ledger import FetchLedger, LedgerRow
from etfuse.settings import Settings

log = logging.getLogger(__name__)

#: ``progress_for(item)`` -> the item's progress callback, and a callback when it ends
ProgressFactory = Callable[[FetchItem], Progress]


@dataclass
class SourceReport:
    source: str
    planned: list[FetchItem] = field(default_factory=list)
    fetched: list[LedgerRow] = field(default_factory=list)
    error: str | None = None
    error_kind: str | None = None
    overdue: str | None = None
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "planned": [{"name": i.name, "target": i.target, "origin": i.origin,
                                                    "size": i.size, "days": list(i.days), "provisional": i.provisional}
                                                   for i in self.planned],
                "fetched": [{"name": r.name, "target": r.target, "origin": r.origin, "size": r.size,
                             "sha256": r.sha256} for r in self.fetched],
                "error": self.error, "error_kind": self.error_kind, "overdue": self.overdue, "skipped": self.skipped}


@dataclass
class FetchReport:
    sources: list[SourceReport]
    dry_run: bool = False

    @property
    def failed(self) -> list[SourceReport]:
        return [s for s in self.sources if s.error]

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "sources": [s.to_json() for s in self.sources]}


def enabled_sources(settings: Settings) -> list[str]:
    return [name for name in fetcher_names() if getattr(settings.fetch, name).enabled]


@contextmanager
def source_lock(settings: Settings, source: str) -> Iterator[bool]:
    """True while this process holds ``fetch/<source>.lock``; False when another fetch holds it."""
    path = settings.folder("fetch") / f"{source}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def overdue_message(settings: Settings, ledger: FetchLedger, source: str, target: str, now: datetime) -> str | None:
    """Why ``source`` is overdue (nothing new for longer than its freshness delay), or None."""
    try:
        delay = settings.freshness.expected_delay_days(target)
    except KeyError:
        return None
    last = ledger.last_fetched_at(source)
    since = last or ledger.first_run_at(source)
    if delay is None or since is None:
        return None
    age = now - _parse(since)
    if age <= timedelta(days=delay):
        return None
    what = f"last new file {last}" if last else f"nothing fetched since the first run {since}"
    return (f"{source}: nothing new fetched for {age.total_seconds() / 86400:.1f} days ({what}); "
            f"freshness.{target}_days allows {delay:g}")


def run_fetch(settings: Settings, sources: list[str] | None = None, *, since: date | None = None,
              until: date | None = None, dry_run: bool = False, today: date | None = None,
              clients: dict[str, Any] | None = None,
              progress_for: ProgressFactory | None = None, now: datetime | None = None,
              dispatcher: AlertDispatcher | None = None) -> FetchReport:
    """Fetch ``sources`` (default: the enabled ones); see the module docstring."""
    names = list(sources) if sources else enabled_sources(settings)
    for name in names:
        get_fetcher(name)                            # unknown names fail before anything is done
    now = now or utcnow()
    today = today or now.date()
    ledger = FetchLedger.of(settings)
    landing = settings.folder("landing")
    dispatcher = dispatcher or (None if dry_run else AlertDispatcher(settings))
    reports = []
    for name in names:
        report = SourceReport(name)
        reports.append(report)
        with source_lock(settings, name) as held:
            if not held:
                report.skipped = "another fetch of this source is running"
                log.warning("fetch %s: %s", name, report.skipped)
                continue
            _run_source(settings, name, report, ledger=ledger, landing=landing, since=since, until=until,
                        today=today, dry_run=dry_run, client=(clients or {}).get(name), progress_for=progress_for,
                        now=now, dispatcher=dispatcher)
    if dispatcher is not None:
        dispatcher.flush()
    return FetchReport(reports, dry_run=dry_run)


def _run_source(settings: Settings, name: str, report: SourceReport, *, ledger: FetchLedger, landing, since, until,
                today, dry_run: bool, client, progress_for, now: datetime, dispatcher) -> None:
    run_id = None if dry_run else ledger.start_run(name)
    target = name
    fetcher = None
    try:
        fetcher = get_fetcher(name)(settings, client=client)
        target = fetcher.target
        report.planned = fetcher.plan(since=since, until=until, today=today, ledger=ledger)
        log.info("fetch %s: %d new file(s) upstream", name, len(report.planned))
        if not dry_run:
            for item in report.planned:
                progress = progress_for(item) if progress_for else None
                row = fetch_item(fetcher, item, landing=landing, ledger=ledger, progress=progress)
                report.fetched.append(row)
                log.info("fetch %s: %s -> landing/%s/%s (%d bytes, sha256 %s)", name, item.origin, row.target,
                         row.name, row.size, row.sha256[:12])
    except FetchError as exc:
        report.error, report.error_kind = str(exc), exc.kind
        log.error("%s", exc)
        if dispatcher is not None:
            dispatcher.send(Alert(severity="critical", source=target, kind="fetch_failed", checks=[f"fetch:{exc.kind}"],
                                  summary=f"{exc} ({len(report.fetched)} of {len(report.planned)} file(s) fetched)",
                                  details={"fetch_source": name, "error": exc.kind, "message": str(exc),
                                           "fetched": [r.name for r in report.fetched]}))
    finally:
        if fetcher is not None:
            fetcher.close()
        if run_id is not None:
            ledger.finish_run(run_id, fetched=len(report.fetched), failed=int(report.error is not None),
                              error=report.error_kind)
    if not dry_run and not report.fetched:
        report.overdue = overdue_message(settings, ledger, name, target, now)
        if report.overdue and dispatcher is not None:
            log.warning("%s", report.overdue)
            dispatcher.send(Alert(severity="warning", source=target, kind="fetch_overdue", checks=[f"fetch:{name}"],
                                  summary=report.overdue, details={"fetch_source": name}))
