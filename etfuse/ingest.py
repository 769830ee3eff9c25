"""Landing zone -> harmonised store or quarantine, one file at a time.

Every file found in ``landing/<source>/`` ends in exactly one place:

* accepted: read, validated (no critical failure), its days written to the harmonised store, the
  raw file moved untouched to ``archive/<source>/<first day>/<sha12>-<name>``;
* quarantined (etfuse/quarantine.py): the raw file moved untouched to ``quarantine/<source>/<name>`` with
  ``<name>.reason.json`` (the stage that refused it, the failed expectations with observed values,
  the time, the report) and a critical alert;
* duplicate: byte-identical to a file already accepted; the archive already holds those bytes, so
  the landing copy is archived beside it (or dropped when an identical copy with the same name is
  there) and nothing else changes.

* superseded: a late ERA5T file whose every day is already stored as final ERA5-Land: archived
  (it is a genuine provider file), nothing stored, a warning alert (etfuse/store.py keeps final).

The file is moved last, after the store write and after its ledger record, so a crash at any point
leaves it in landing and the next run repeats the work idempotently (a run that finds the record of
an accept whose move it did not see finishes the move).  Moves are renames, or, across
filesystems, a copy to a temporary name, fsync and rename before the landing copy is removed: a
crash never leaves a partial file under a final name.

One ingest at a time: ``ingest_all`` holds the ingest lock (``harmonised/.ingest.lock``) for its
whole run and ``ingest_file`` for each file, and a file that is no longer in landing when its turn
comes (another run took it) is reported as ``skipped``, so two runs over the same landing zone
(two daily runs at once, a flow and an operator) never move a file twice.  The Prefect flow
(flows/ingest.py) only orchestrates these functions.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Iterator

import pandas as pd

from etfuse.alerts import Alert, AlertDispatcher, alert_from_exception, alert_from_validation
from etfuse.clock import utcnow
from etfuse.errors import EtfuseError, SourceFormatError, StoreError
from etfuse.landing import LandingFile, safe_name
from etfuse.landing import move_file as _move
from etfuse.mosaic import ModisMosaic, check_missing_tiles
from etfuse.quarantine import QuarantineError, quarantine, quarantined, release
from etfuse.settings import Settings
from etfuse.sources import get_reader, read_source, reader_names
from etfuse.sources.common import file_sha256
from etfuse.store import HarmonisedStore

#: quarantine moved to etfuse/quarantine.py; these names stay importable from here
__all__ = ["SOURCE_ORDER", "INGEST_LOCK_TIMEOUT_S", "IngestLockedError", "ingest_lock", "LandingFile", "FileOutcome",
           "IngestReport", "IngestContext", "discover", "archive_path", "archive", "ingest_file", "ingest_all",
           "safe_name", "QuarantineError", "quarantine", "quarantined", "release"]

log = logging.getLogger(__name__)

#: grids first (ERA5-Land before GLEAM, so GLEAM's consistency check finds the same day), stations last
SOURCE_ORDER = ("era5land", "gleam", "modis", "cma", "stations", "fluxnet")


#: how long an ingest waits for another one to finish before giving up [s]
INGEST_LOCK_TIMEOUT_S = 3 * 3600.0
#: errors of the machine, not of the file: the run stops and the file stays in landing for the next
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOMEM, errno.EMFILE, errno.ENFILE}


class IngestLockedError(EtfuseError):
    """Another ingest held the ingest lock for longer than INGEST_LOCK_TIMEOUT_S."""


_lock_guard = threading.RLock()
_held_locks: dict[str, list] = {}


@contextmanager
def ingest_lock(settings: Settings, *, timeout: float | None = None) -> Iterator[None]:
    """One ingest at a time per ETFUSE_HOME (an fcntl lock on ``harmonised/.ingest.lock``).

    Re-entrant within a thread (ingest_all holds it and ingest_file takes it again); other threads
    of the process and other processes wait, up to ``timeout`` (default INGEST_LOCK_TIMEOUT_S).
    The lock dies with its process, so a killed run never leaves it held.
    """
    path = Path(settings.harmonised) / ".ingest.lock"
    key = str(path.resolve())
    deadline = time.monotonic() + (INGEST_LOCK_TIMEOUT_S if timeout is None else timeout)
    with _lock_guard:                          # threads of this process queue here; the same thread re-enters
        held = _held_locks.get(key)
        if held is not None:
            held[1] += 1
            try:
                yield
            finally:
                held[1] -= 1
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
        try:
            waited = False
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waited:
                        log.warning("another ingest is running (lock %s); waiting for it to finish", path)
                        waited = True
                    if time.monotonic() > deadline:
                        raise IngestLockedError(f"another ingest has held {path} for too long; "
                                                "its files are left in landing for the next run") from None
                    time.sleep(0.2)
            _held_locks[key] = [handle, 1]
            try:
                yield
            finally:
                del _held_locks[key]
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        finally:
            handle.close()



@dataclass
class FileOutcome:
    source: str
    file: str
    sha256: str
    status: str                         # accepted | quarantined | duplicate | superseded | skipped
    days: list[str] = field(default_factory=list)
    changes: dict[str, int] = field(default_factory=dict)
    kept_as: str | None = None
    reason: dict | None = None
    alerts: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class IngestReport:
    outcomes: list[FileOutcome] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out

    def to_json(self) -> dict:
        return {"counts": self.counts(), "outcomes": [o.to_json() for o in self.outcomes], "skipped": self.skipped}


# ----------------------------------------------------------------------------- discovery
def discover(settings: Settings, *, now: float | None = None) -> tuple[list[LandingFile], list[str]]:
    """New files in ``landing/<source>/``, in processing order, and what was skipped (with why)."""
    landing = settings.folder("landing")
    known = set(reader_names())
    files, skipped = [], []
    if not landing.is_dir():
        return files, skipped
    now = time.time() if now is None else now
    for entry in sorted(landing.iterdir()):
        if entry.is_file():
            skipped.append(f"{entry.name}: directly in landing/; put it in landing/<source>/ (one of {sorted(known)})")
        elif entry.is_dir() and entry.name not in known and not entry.name.startswith("."):
            skipped.append(f"{entry.name}/: not a known source folder; expected one of {sorted(known)}")
    order = {s: k for k, s in enumerate(SOURCE_ORDER)}
    for source in sorted(known, key=lambda s: order.get(s, len(order))):
        folder = landing / source
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if not path.is_file():
                continue
            if path.name.startswith("."):
                skipped.append(f"{source}/{path.name}: hidden (an upload in progress, e.g. rsync's temporary "
                               f"name); rename it without the leading '.' to ingest it")
                continue
            if path.name.endswith(tuple(settings.ingest.partial_suffixes)):
                skipped.append(f"{source}/{path.name}: still being written (partial-file suffix)")
                continue
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:         # taken meanwhile by another ingest run
                continue
            if now - mtime < settings.ingest.min_age_seconds:
                skipped.append(f"{source}/{path.name}: younger than ingest.min_age_seconds")
                continue
            files.append(LandingFile(source, path))
    return files, skipped



def archive_path(path: Path, *, settings: Settings, source: str, sha256: str, first_day: str | None) -> Path:
    """Where an accepted raw file is archived: ``archive/<source>/<first day>/<sha12>-<name>``."""
    return settings.folder("archive") / source / (first_day or "undated") / f"{sha256[:12]}-{safe_name(path.name)}"


def archive(path: Path, *, settings: Settings, source: str, sha256: str, first_day: str | None) -> Path:
    """Move an accepted raw file to ``archive/<source>/<first day>/<sha12>-<name>`` (content-addressed)."""
    dest = archive_path(path, settings=settings, source=source, sha256=sha256, first_day=first_day)
    if dest.exists():
        if file_sha256(dest) == sha256:   # the same bytes under the same name are already archived
            path.unlink()
            return dest
        aside = dest.with_name(f"{dest.name}.mismatch-{utcnow():%Y%m%dT%H%M%S%f}")
        log.warning("archived %s does not hold the bytes its name says; kept as %s", dest, aside.name)
        os.replace(dest, aside)
    return _move(path, dest)



# ----------------------------------------------------------------------------- one file
@dataclass
class IngestContext:
    """What every file of one run shares."""

    settings: object
    store: HarmonisedStore
    dispatcher: AlertDispatcher
    today: date
    reference_stats: dict | None = None
    known_station_ids: frozenset[str] | None = None

    @classmethod
    def create(cls, settings: Settings, *, today: date | None = None,
               dispatcher: AlertDispatcher | None = None) -> "IngestContext":
        from etfuse.quality.drift import default_stats_path, load_reference_stats
        from etfuse.stations_meta import known_locations
        settings.ensure_folders()
        store = HarmonisedStore.of(settings)
        stats = load_reference_stats(default_stats_path(settings))
        ids = set(known_locations().index.astype(str))
        try:
            ids |= set(store.read_stations(with_missing=True)["station_id"].astype(str))
        except Exception:  # noqa: BLE001 - an empty store has no station table yet
            pass
        return cls(settings, store, dispatcher or AlertDispatcher(settings),
                   today or utcnow().date(), stats, frozenset(ids))


def _alert(ctx: IngestContext, alert: Alert, outcome: FileOutcome) -> None:
    sent = ctx.dispatcher.send(alert)
    outcome.alerts.append(f"{alert.severity}:{alert.kind}" + (" (grouped)" if sent.suppressed else ""))


def _refuse(lf: LandingFile, ctx: IngestContext, outcome: FileOutcome, reason: dict, alert: Alert) -> FileOutcome:
    dest = quarantine(lf.path, settings=ctx.settings, source=lf.source, sha256=outcome.sha256, reason=reason)
    outcome.status, outcome.kept_as, outcome.reason = "quarantined", str(dest), reason
    ctx.store.record_delivery(sha256=outcome.sha256, file_name=lf.path.name, source=lf.source, status="quarantined",
                              kept_as=str(dest), days=outcome.days, detail=reason)
    _alert(ctx, alert, outcome)
    return outcome


def ingest_file(lf: LandingFile, ctx: IngestContext) -> FileOutcome:
    """Read, validate, store and archive one landing file, or quarantine it; never raises for bad data.

    Holds the ingest lock while it works; a file that another run took meanwhile is ``skipped``.
    Errors of the machine (disk full, read-only filesystem) propagate and leave the file in landing.
    """
    with ingest_lock(ctx.settings):
        if not lf.path.is_file():
            outcome = FileOutcome(lf.source, lf.path.name, "", "skipped",
                                  reason={"stage": "claim", "error": "no longer in landing: another ingest run took it"})
            return _finish(outcome, time.perf_counter())
        return _ingest_file(lf, ctx)


def _ingest_file(lf: LandingFile, ctx: IngestContext) -> FileOutcome:
    from etfuse.quality import ValidationContext, validate

    t0 = time.perf_counter()
    sha = file_sha256(lf.path)
    outcome = FileOutcome(lf.source, lf.path.name, sha, "pending")
    prior = ctx.store.delivery(sha, lf.source)
    if prior is not None and prior["status"] in ("accepted", "duplicate", "superseded"):
        first_day = (prior["days"] or [None])[0]
        dest = archive_path(lf.path, settings=ctx.settings, source=lf.source, sha256=sha, first_day=first_day)
        if (prior["status"] != "duplicate" and prior["file_name"] == lf.path.name and prior["kept_as"] == str(dest)
                and not dest.exists()):
            # the run that accepted this file recorded it and stopped before moving it: finish the move
            archive(lf.path, settings=ctx.settings, source=lf.source, sha256=sha, first_day=first_day)
            outcome.status, outcome.kept_as, outcome.days = prior["status"], str(dest), prior["days"]
            outcome.changes = dict(prior["detail"].get("changes", {}))
            return _finish(outcome, t0)
        dest = archive(lf.path, settings=ctx.settings, source=lf.source, sha256=sha, first_day=first_day)
        outcome.status, outcome.kept_as, outcome.days = "duplicate", str(dest), prior["days"]
        ctx.store.record_delivery(sha256=sha, file_name=lf.path.name, source=lf.source, status="duplicate",
                                  kept_as=str(dest), days=prior["days"], detail={"same_as": prior["file_name"]})
        outcome.seconds = time.perf_counter() - t0
        return outcome
    try:
        ds = read_source(lf.source, lf.path, settings=ctx.settings)
    except SourceFormatError as exc:
        reason = {"stage": "read", "error": str(exc), "variable": exc.variable}
        alert = Alert(severity="critical", source=lf.source, kind="unreadable", file=lf.path.name,
                      summary=f"{lf.path.name} quarantined: unreadable ({type(exc).__name__})",
                      checks=[f"read:{type(exc).__name__}"], details=reason)
        return _finish(_refuse(lf, ctx, outcome, reason, alert), t0)
    except Exception as exc:  # noqa: BLE001 - a reader bug must not leave the file in limbo
        _raise_if_environment(exc)
        reason = {"stage": "read", "error": f"{type(exc).__name__}: {exc}"}
        return _finish(_refuse(lf, ctx, outcome, reason, alert_from_exception(
            exc, source=lf.source, kind="quarantined", file=lf.path.name, step="read")), t0)
    outcome.days = sorted({f"{pd.Timestamp(t):%Y-%m-%d}" for t in ds["time"].values})
    context = ValidationContext(today=ctx.today, reference_stats=ctx.reference_stats,
                                other_source_day=lambda src, day: ctx.store.read_grid_day(src, day),
                                known_station_ids=ctx.known_station_ids)
    try:
        result = validate(lf.source, ds, settings=ctx.settings, file=lf.path, context=context)
    except Exception as exc:  # noqa: BLE001 - a file that breaks validation must not block every later run
        _raise_if_environment(exc)
        reason = {"stage": "validation", "error": f"{type(exc).__name__}: {exc}"}
        return _finish(_refuse(lf, ctx, outcome, reason, alert_from_exception(
            exc, source=lf.source, kind="quarantined", file=lf.path.name, step="validation")), t0)
    report = str(result.report_path) if result.report_path else None
    if not result.accepted:
        reason = {"stage": "validation", **result.to_json()}
        alert = alert_from_validation(result.to_json(), kind="quarantined", report_url=report)
        return _finish(_refuse(lf, ctx, outcome, reason, alert), t0)
    try:
        put = ctx.store.put_grid if get_reader(lf.source).kind == "grid" else ctx.store.put_stations
        tiles = {"combine": ModisMosaic(ctx.settings)} if lf.source == "modis" else {}   # one tile, not the day
        changes = put(lf.source, ds, file_name=lf.path.name, file_sha256=sha, **tiles)
    except StoreError as exc:
        reason = {"stage": "store", "error": str(exc)}
        return _finish(_refuse(lf, ctx, outcome, reason, alert_from_exception(
            exc, source=lf.source, kind="quarantined", file=lf.path.name, step="store")), t0)
    for change in changes:
        outcome.changes[change.action] = outcome.changes.get(change.action, 0) + 1
    revised = [f"{c.day:%Y-%m-%d}" for c in changes if c.action == "revised"]
    if revised:
        ctx.store.mark_reprocess(revised, source=lf.source, reason=f"revision by {lf.path.name}")
        _alert(ctx, Alert(severity="info", source=lf.source, kind="revision", file=lf.path.name, days=revised,
                          summary=f"{lf.path.name} revised {len(revised)} stored day(s); they are marked for reprocessing",
                          checks=["revision"], report_url=report), outcome)
    finalised = [f"{c.day:%Y-%m-%d}" for c in changes if c.finalised and c.action != "revised"]
    if finalised:                         # the same values, now final: the product days can become final
        ctx.store.mark_reprocess(finalised, source=lf.source, reason=f"confirmed final by {lf.path.name}")
    superseded = [f"{c.day:%Y-%m-%d}" for c in changes if c.superseded]
    if superseded:
        _alert(ctx, Alert(severity="warning", source=lf.source, kind="superseded", file=lf.path.name, days=superseded,
                          summary=f"{lf.path.name}: {len(superseded)} day(s) of preliminary ERA5T not stored: final "
                                  "ERA5-Land is already stored for them and is kept",
                          checks=["era5t_over_final"], report_url=report), outcome)
    if result.warnings:
        _alert(ctx, alert_from_validation(result.to_json(), kind="validation_warning", report_url=report), outcome)
    only_superseded = bool(superseded) and all(c.action in ("unchanged", "superseded") for c in changes)
    status = "superseded" if only_superseded else "accepted"
    dest = archive_path(lf.path, settings=ctx.settings, source=lf.source, sha256=sha,
                        first_day=outcome.days[0] if outcome.days else None)
    detail = {"changes": outcome.changes, "warnings": [w.check for w in result.warnings]}
    if superseded:
        detail["superseded_days"] = superseded
        detail["superseded_reason"] = "preliminary ERA5T over final ERA5-Land: the final days are kept"
    # recorded first, then moved: a crash in between leaves the file in landing and the record, and the
    # next run finishes the move (see the duplicate branch above)
    ctx.store.record_delivery(sha256=sha, file_name=lf.path.name, source=lf.source, status=status,
                              kept_as=str(dest), days=outcome.days, detail=detail)
    archive(lf.path, settings=ctx.settings, source=lf.source, sha256=sha,
            first_day=outcome.days[0] if outcome.days else None)
    outcome.status, outcome.kept_as = status, str(dest)
    return _finish(outcome, t0)


def _raise_if_environment(exc: BaseException) -> None:
    """Disk full, read-only or failing storage: not the file's fault; stop the run, keep the file in landing."""
    if isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS:
        raise exc


def _finish(outcome: FileOutcome, t0: float) -> FileOutcome:
    outcome.seconds = time.perf_counter() - t0
    log.info("%s %s: %s %s", outcome.source, outcome.file, outcome.status, outcome.changes or "")
    return outcome


def ingest_all(settings: Settings, *, today: date | None = None,
               dispatcher: AlertDispatcher | None = None) -> IngestReport:
    """Every new landing file, in order (the plain-Python form of the ingest flow)."""
    ctx = IngestContext.create(settings, today=today, dispatcher=dispatcher)
    with ingest_lock(settings):
        files, skipped = discover(settings)
        report = IngestReport(skipped=skipped)
        for lf in files:
            report.outcomes.append(ingest_file(lf, ctx))
        check_missing_tiles(ctx.store, settings, ctx.dispatcher)
    ctx.dispatcher.flush()
    return report
