"""Send alerts to every channel, grouping repeated identical problems; never raise to the caller.

* The JSON-lines log ``$ETFUSE_HOME/alerts/alerts.jsonl`` gets every alert, suppressed ones too.
* The first alert of a fingerprint is delivered at once and opens a group (etfuse/alerts/grouping.py) for
  ``group_window_minutes``; identical alerts inside the window are suppressed (counted, files and
  days remembered).  The first ``send`` or ``flush`` after the window ends closes the group and
  delivers one digest ("N more like this since ...").  Group state lives in
  ``$ETFUSE_HOME/alerts/groups.sqlite`` so it survives the end of the process (each ingest run is
  one), and two processes share it safely (``BEGIN IMMEDIATE`` transactions, busy timeout).
* Each delivery is tried ``1 + retries`` times with doubling back-off; a channel that still fails
  is logged (``logging`` and a ``channel_failed`` record) and then rested for
  ``channel_cooldown_s``.  Channels are served in parallel threads and every wait is bounded.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from etfuse.alerts.channels import (Channel, DeliveryError, JsonlChannel, PermanentDeliveryError, accepts,
                                    channels_from_settings)
from etfuse.alerts.apprise_channels import apprise_channels_from_settings
from etfuse.alerts.grouping import GROUPS_NAME, ClosedGroup, GroupStore, digest_alert
from etfuse.alerts.model import Alert, DigestInfo, as_utc, iso_utc, utcnow
from etfuse.settings import Settings

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]

JSONL_NAME = "alerts.jsonl"


def public_report_link(alert: Alert, settings: Settings) -> Alert:
    """A ``file://`` report link under ``$ETFUSE_HOME/reports`` rewritten to ``alerts.reports_base_url``
    (where the API serves the reports, ``/reports/...``), so the link opens from a phone or a chat."""
    base = getattr(settings.alerts, "reports_base_url", None)
    if not base or not alert.report_url or not alert.report_url.startswith("file://"):
        return alert
    import urllib.parse
    import urllib.request
    local = Path(urllib.request.url2pathname(urllib.parse.urlsplit(alert.report_url).path))
    try:
        relative = local.resolve().relative_to(Path(settings.folder("reports")).resolve())
    except (ValueError, OSError):
        return alert
    return alert.model_copy(update={"report_url": base.rstrip("/") + "/" + urllib.parse.quote(relative.as_posix())})


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChannelResult:
    """What happened to one message on one channel."""

    channel: str
    ok: bool
    attempts: int
    error: str | None = None
    #: The failure was of a kind retries cannot fix (then attempts stops early).
    permanent: bool = False
    #: Not tried: the channel failed earlier in this call or is resting after a failure.
    skipped: bool = False
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class DigestOutcome:
    """A group that closed with suppressed alerts, and how its digest was delivered."""

    digest: Alert
    deliveries: tuple[ChannelResult, ...]

    @property
    def info(self) -> DigestInfo:
        assert self.digest.digest is not None
        return self.digest.digest

    @property
    def group_id(self) -> str:
        return self.info.group_id

    @property
    def count(self) -> int:
        return self.info.count

    @property
    def files(self) -> list[str]:
        return self.info.files

    @property
    def days(self) -> list[str]:
        return self.digest.days


@dataclass(frozen=True)
class DispatchOutcome:
    """What :meth:`AlertDispatcher.send` did with one alert."""

    alert: Alert
    #: The group this alert opened or joined (None if the group state could not be reached).
    group_id: str | None
    #: True when an identical problem was delivered within the window: only logged, counted.
    suppressed: bool
    #: ``jsonl`` first, then each outbound channel that took part (none when suppressed).
    deliveries: tuple[ChannelResult, ...]
    #: Digests of groups that closed and were delivered during this call.
    digests: tuple[DigestOutcome, ...] = ()

    @property
    def failed_channels(self) -> tuple[str, ...]:
        return tuple(r.channel for r in self.deliveries if not r.ok)

    @property
    def delivered(self) -> bool:
        """Delivered to every channel that took part (and not suppressed)."""
        return not self.suppressed and all(r.ok for r in self.deliveries)


# --------------------------------------------------------------------------------------------
# dispatcher
# --------------------------------------------------------------------------------------------
def alert_record(alert: Alert, *, record: str, group_id: str | None, suppressed: bool,
                 logged_at: dt.datetime) -> dict[str, Any]:
    """One JSON-lines record for an alert or a digest (``record`` = ``alert`` | ``digest``)."""
    data = alert.model_dump(mode="json")
    out: dict[str, Any] = {"record": record, "logged_at": iso_utc(logged_at), "id": data["id"],
                           "fingerprint": data["fingerprint"], "group_id": group_id, "suppressed": suppressed}
    for key in ("severity", "source", "kind", "file", "days", "summary", "checks", "report_url", "details",
                "created_at", "digest"):
        out[key] = data[key]
    return out


@dataclass
class _Message:
    alert: Alert
    record: str                      # "alert" | "digest"
    group_id: str | None
    results: dict[str, ChannelResult] = field(default_factory=dict)


class AlertDispatcher:
    """Deliver alerts to the JSON-lines log and to the channels ``settings.alerts`` configures.

    ``clock`` (returning an aware UTC datetime) drives grouping and the ``logged_at`` stamps;
    ``channels`` replaces the configured outbound channels (objects with ``name``, ``target``,
    ``min_severity`` and ``deliver(alert, group_id=)``).
    """

    def __init__(self, settings: Settings, *, clock: Clock | None = None,
                 channels: Sequence[Channel] | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.config = settings.alerts
        self.folder = Path(settings.folder("alerts"))
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:        # reported again by every failed write; never stops the caller
            log.error("cannot create the alerts folder %s: %s", self.folder, exc)
        self.clock: Clock = clock or utcnow
        self.jsonl = JsonlChannel(self.folder / JSONL_NAME)
        self.groups = GroupStore(self.folder / GROUPS_NAME)
        self.channels: list[Channel] = (list(channels) if channels is not None else
                                        channels_from_settings(self.config) + apprise_channels_from_settings(self.config))
        self._sleep = sleep
        self._resting_until: dict[str, float] = {}          # channel name -> time.monotonic()
        self._secrets = [s for s in (self._secret(self.config.smtp_password), self._secret(self.config.webhook_url),
                                     *self.config.apprise_urls) if s]

    @staticmethod
    def _secret(value: Any) -> str | None:
        if value is None:
            return None
        return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)

    @property
    def jsonl_path(self) -> Path:
        return self.jsonl.path

    def _now(self) -> dt.datetime:
        return as_utc(self.clock())

    def _window(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.config.group_window_minutes)

    # ------------------------------------------------------------------ public API
    def send(self, alert: Alert) -> DispatchOutcome:
        """Log the alert, deliver it unless an identical one is inside its window; never raises."""
        now = self._now()
        alert = public_report_link(alert, self.settings)
        try:
            group_id, suppressed, closed = self.groups.admit(alert, now, self._window())
        except Exception as exc:  # noqa: BLE001 - grouping must not stop an alert
            log.error("alert grouping state %s unusable (%s: %s); delivering without grouping",
                      self.groups.path, type(exc).__name__, exc)
            group_id, suppressed, closed = None, False, []
        digests = self._digest_messages(closed, now)
        main = _Message(alert, "alert", group_id)
        for message in digests:
            self._log(message, suppressed=False, now=now)
        jsonl_result = self._log(main, suppressed=suppressed, now=now)
        outbound = digests + ([] if suppressed else [main])
        self._deliver(outbound, now)
        if suppressed:
            log.info("alert %s suppressed (group %s): %s", alert.fingerprint, group_id, alert.summary)
        deliveries = (jsonl_result,) + tuple(main.results[c.name] for c in self.channels if c.name in main.results)
        return DispatchOutcome(alert=alert, group_id=group_id, suppressed=suppressed, deliveries=deliveries,
                               digests=tuple(self._digest_outcome(m) for m in digests))

    def flush(self, *, force: bool = False) -> list[DigestOutcome]:
        """Deliver the digests of groups whose window has ended (all open groups with ``force``).

        Call it at the end of every run; never raises.
        """
        now = self._now()
        try:
            closed = self.groups.close_due(now, force=force)
        except Exception as exc:  # noqa: BLE001
            log.error("alert grouping state %s unusable (%s: %s); no digests sent",
                      self.groups.path, type(exc).__name__, exc)
            return []
        digests = self._digest_messages(closed, now)
        for message in digests:
            self._log(message, suppressed=False, now=now)
        self._deliver(digests, now)
        return [self._digest_outcome(m) for m in digests]

    # ------------------------------------------------------------------ internals
    def _digest_messages(self, closed: list[ClosedGroup], now: dt.datetime) -> list[_Message]:
        out = []
        for group in closed:
            if group.suppressed <= 0:
                continue
            try:
                out.append(_Message(digest_alert(group, now), "digest", group.group_id))
            except Exception as exc:  # noqa: BLE001
                log.error("cannot build the digest of alert group %s: %s: %s", group.group_id, type(exc).__name__, exc)
        return out

    def _digest_outcome(self, message: _Message) -> DigestOutcome:
        return DigestOutcome(digest=message.alert, deliveries=tuple(
            message.results[c.name] for c in self.channels if c.name in message.results))

    def _log(self, message: _Message, *, suppressed: bool, now: dt.datetime) -> ChannelResult:
        start = time.monotonic()
        try:
            self.jsonl.append(alert_record(message.alert, record=message.record, group_id=message.group_id,
                                           suppressed=suppressed, logged_at=now))
            return ChannelResult("jsonl", True, 1, elapsed_s=time.monotonic() - start)
        except Exception as exc:  # noqa: BLE001 - a full disk must not stop ingest either
            error = self._scrub(f"{type(exc).__name__}: {exc}")
            log.error("cannot append alert %s to %s: %s", message.alert.id, self.jsonl.path, error)
            return ChannelResult("jsonl", False, 1, error=error, elapsed_s=time.monotonic() - start)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _attempt_budget_s(self) -> float:
        """Longest one message may take on one channel, retries and back-off included."""
        cfg = self.config
        backoff = sum(cfg.retry_backoff_s * 2 ** k for k in range(cfg.retries))
        # an SMTP attempt is several round trips, each bounded by the socket timeout
        return (1 + cfg.retries) * 2 * cfg.timeout_s + backoff

    def _deliver(self, messages: list[_Message], now: dt.datetime) -> None:
        try:
            self._deliver_unguarded(messages, now)
        except Exception as exc:  # noqa: BLE001 - e.g. no thread can be started; never reach the caller
            log.error("alert delivery failed unexpectedly: %s: %s", type(exc).__name__, self._scrub(str(exc)))
            for message in messages:
                for channel in self.channels:
                    message.results.setdefault(channel.name, ChannelResult(
                        channel.name, False, 0, error=self._scrub(f"{type(exc).__name__}: {exc}")))

    def _deliver_unguarded(self, messages: list[_Message], now: dt.datetime) -> None:
        """Every message to every outbound channel; channels in parallel, messages in order."""
        if not messages or not self.channels:
            return
        jobs = []
        for channel in self.channels:
            todo = [m for m in messages if accepts(channel, m.alert)]
            if todo:
                jobs.append((channel, todo))
        if not jobs:
            return
        outcomes: dict[str, list[tuple[_Message, ChannelResult]]] = {}
        threads = []
        for channel, todo in jobs:
            sink: list[tuple[_Message, ChannelResult]] = []
            outcomes[channel.name] = sink
            # a daemon thread per channel: channels wait in parallel, and one stuck beyond its time
            # budget (e.g. in a DNS lookup, which no socket timeout covers) is abandoned
            thread = threading.Thread(target=self._run_channel, args=(channel, todo, sink),
                                      name=f"etfuse-alert-{channel.name}", daemon=True)
            thread.start()
            threads.append((channel, todo, thread))
        deadline = time.monotonic() + max(len(todo) for _, todo in jobs) * self._attempt_budget_s() + 0.5
        for channel, todo, thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for channel, todo in jobs:
            done = {id(m): r for m, r in list(outcomes[channel.name])}
            for message in todo:
                result = done.get(id(message))
                if result is None:     # the thread is stuck (e.g. DNS); abandon it, it is a daemon
                    result = ChannelResult(channel.name, False, 0, error="abandoned: no result within the time "
                                           "budget of this channel", skipped=False)
                    self._resting_until[channel.name] = time.monotonic() + self.config.channel_cooldown_s
                message.results[channel.name] = result
                if result.ok:
                    log.info("alert %s (%s %s) delivered by %s", message.alert.id, message.alert.severity,
                             message.alert.source, channel.name)
                else:
                    self._channel_failed(channel, message, result, now)
            if any(not r.ok and not r.permanent and not r.skipped and r.attempts > 0
                   for m, r in outcomes[channel.name]):
                self._resting_until[channel.name] = time.monotonic() + self.config.channel_cooldown_s

    def _run_channel(self, channel: Channel, messages: list[_Message],
                     sink: list[tuple[_Message, ChannelResult]]) -> None:
        down_reason: str | None = None
        resting = self._resting_until.get(channel.name, 0.0) - time.monotonic()
        if resting > 0:
            down_reason = (f"not tried: {channel.name} failed recently; resting {resting:.0f} s more "
                           "(alerts.channel_cooldown_s)")
        for message in messages:
            if down_reason:
                sink.append((message, ChannelResult(channel.name, False, 0, error=down_reason, skipped=True)))
                continue
            result = self._with_retries(channel, message)
            sink.append((message, result))
            if not result.ok and not result.permanent:
                down_reason = f"not tried: {channel.name} failed on an earlier message of this call"

    def _with_retries(self, channel: Channel, message: _Message) -> ChannelResult:
        cfg = self.config
        start = time.monotonic()
        error: str = ""
        attempts = 0
        for attempt in range(1 + cfg.retries):
            attempts = attempt + 1
            try:
                channel.deliver(message.alert, group_id=message.group_id)
                return ChannelResult(channel.name, True, attempts, elapsed_s=time.monotonic() - start)
            except PermanentDeliveryError as exc:
                return ChannelResult(channel.name, False, attempts, error=self._scrub(str(exc)), permanent=True,
                                     elapsed_s=time.monotonic() - start)
            except DeliveryError as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - a channel bug must not reach the caller
                error = f"{type(exc).__name__}: {exc}"
            log.debug("alert %s: %s attempt %d failed: %s", message.alert.id, channel.name, attempts,
                      self._scrub(error))
            if attempt < cfg.retries:
                self._sleep(cfg.retry_backoff_s * 2 ** attempt)
        return ChannelResult(channel.name, False, attempts, error=self._scrub(error), elapsed_s=time.monotonic() - start)

    def _channel_failed(self, channel: Channel, message: _Message, result: ChannelResult, now: dt.datetime) -> None:
        alert = message.alert
        log.warning("alert %s (%s %s: %s) not delivered by %s (%s) after %d attempt(s): %s", alert.id,
                    alert.severity, alert.source, alert.kind, channel.name, channel.target, result.attempts,
                    result.error)
        record = {"record": "channel_failed", "logged_at": iso_utc(now), "channel": channel.name,
                  "target": self._scrub(channel.target), "alert_id": alert.id, "alert_record": message.record,
                  "fingerprint": alert.fingerprint, "group_id": message.group_id, "severity": alert.severity,
                  "source": alert.source, "kind": alert.kind, "summary": alert.summary,
                  "attempts": result.attempts, "permanent": result.permanent, "skipped": result.skipped,
                  "error": result.error, "elapsed_s": round(result.elapsed_s, 3)}
        try:
            self.jsonl.append(record)
        except Exception as exc:  # noqa: BLE001
            log.error("cannot append a channel_failed record to %s: %s: %s", self.jsonl.path, type(exc).__name__, exc)


def read_alert_log(settings: Settings) -> list[dict[str, Any]]:
    """Every record of ``$ETFUSE_HOME/alerts/alerts.jsonl`` (empty when there is none)."""
    return JsonlChannel(Path(settings.folder("alerts")) / JSONL_NAME).read()
