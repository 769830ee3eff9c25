"""Landing zone -> harmonised store or quarantine, one file at a time.

Every file found in ``landing/<source>/`` ends in exactly one place:

* accepted: read, validated (no critical failure), its days written to the harmonised store, the
  raw file moved untouched to ``archive/<source>/<first day>/<sha12>-<name>``;
* quarantined: the raw file moved untouched to ``quarantine/<source>/<name>`` with
  ``<name>.reason.json`` (the stage that refused it, the failed expectations with observed values,
  the time, the report) and a critical alert;
* duplicate: byte-identical to a file already accepted; the archive already holds those bytes, so
  the landing copy is archived beside it (or dropped when an identical copy with the same name is
  there) and nothing else changes.

The file is moved last, after the store write, so a crash at any point leaves it in landing and
the next run repeats the work idempotently.  The Prefect flow (flows/ingest.py) only orchestrates
these functions.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import pandas as pd

from etfuse.alerts import Alert, AlertDispatcher, alert_from_exception, alert_from_validation
from etfuse.errors import EtfuseError, SourceFormatError, StoreError
from etfuse.sources import get_reader, read_source, reader_names
from etfuse.sources.common import file_sha256
from etfuse.store import HarmonisedStore

log = logging.getLogger(__name__)

#: grids first (ERA5-Land before GLEAM, so GLEAM's consistency check finds the same day), stations last
SOURCE_ORDER = ("era5land", "gleam", "modis", "cma", "stations", "fluxnet")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class QuarantineError(EtfuseError):
    """A quarantine operation cannot be done (unknown file, name clash)."""


def safe_name(name: str) -> str:
    """A provider's file name made safe as a single path component (no separators, no '..')."""
    base = _UNSAFE.sub("_", Path(str(name).replace("\\", "/")).name).lstrip(".")
    return (base or "unnamed")[:200]


@dataclass(frozen=True)
class LandingFile:
    source: str
    path: Path


@dataclass
class FileOutcome:
    source: str
    file: str
    sha256: str
    status: str                         # accepted | quarantined | duplicate
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
def discover(settings, *, now: float | None = None) -> tuple[list[LandingFile], list[str]]:
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
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.name.endswith(tuple(settings.ingest.partial_suffixes)):
                skipped.append(f"{source}/{path.name}: still being written (partial-file suffix)")
                continue
            if now - path.stat().st_mtime < settings.ingest.min_age_seconds:
                skipped.append(f"{source}/{path.name}: younger than ingest.min_age_seconds")
                continue
            files.append(LandingFile(source, path))
    return files, skipped


# ----------------------------------------------------------------------------- moving files
def _move(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dest))      # a rename on one filesystem, copy + delete across
    return dest


def archive(path: Path, *, settings, source: str, sha256: str, first_day: str | None) -> Path:
    """Move an accepted raw file to ``archive/<source>/<first day>/<sha12>-<name>`` (content-addressed)."""
    dest = settings.folder("archive") / source / (first_day or "undated") / f"{sha256[:12]}-{safe_name(path.name)}"
    if dest.exists():                     # the same bytes under the same name are already archived
        path.unlink()
        return dest
    return _move(path, dest)


def quarantine(path: Path, *, settings, source: str, sha256: str, reason: dict) -> Path:
    """Move a refused raw file to ``quarantine/<source>/`` untouched, with ``<name>.reason.json``."""
    folder = settings.folder("quarantine") / source
    dest = folder / safe_name(path.name)
    if dest.exists() and file_sha256(dest) != sha256:
        dest = folder / f"{sha256[:12]}-{safe_name(path.name)}"
    if dest.exists():
        path.unlink()                     # identical bytes already quarantined under this name
    else:
        _move(path, dest)
    record = {"file": path.name, "source": source, "sha256": sha256,
              "quarantined_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **reason}
    tmp = dest.with_name(dest.name + ".reason.json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(dest.with_name(dest.name + ".reason.json"))
    return dest


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
    def create(cls, settings, *, today: date | None = None, dispatcher: AlertDispatcher | None = None) -> "IngestContext":
        from etfuse.quality.drift import default_stats_path, load_reference_stats
        from etfuse.stations_meta import known_locations
        settings.ensure_folders()
        store = HarmonisedStore(settings.harmonised)
        stats = load_reference_stats(default_stats_path(settings))
        ids = set(known_locations().index.astype(str))
        try:
            ids |= set(store.read_stations(with_missing=True)["station_id"].astype(str))
        except Exception:  # noqa: BLE001 - an empty store has no station table yet
            pass
        return cls(settings, store, dispatcher or AlertDispatcher(settings),
                   today or datetime.now(timezone.utc).date(), stats, frozenset(ids))


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
    """Read, validate, store and archive one landing file, or quarantine it; never raises for bad data."""
    from etfuse.quality import ValidationContext, validate

    t0 = time.perf_counter()
    sha = file_sha256(lf.path)
    outcome = FileOutcome(lf.source, lf.path.name, sha, "pending")
    prior = ctx.store.delivery(sha, lf.source)
    if prior is not None and prior["status"] in ("accepted", "duplicate"):
        dest = archive(lf.path, settings=ctx.settings, source=lf.source, sha256=sha,
                       first_day=(prior["days"] or [None])[0])
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
        reason = {"stage": "read", "error": f"{type(exc).__name__}: {exc}"}
        return _finish(_refuse(lf, ctx, outcome, reason, alert_from_exception(
            exc, source=lf.source, kind="quarantined", file=lf.path.name, step="read")), t0)
    outcome.days = sorted({f"{pd.Timestamp(t):%Y-%m-%d}" for t in ds["time"].values})
    context = ValidationContext(today=ctx.today, reference_stats=ctx.reference_stats,
                                other_source_day=lambda src, day: ctx.store.read_grid_day(src, day),
                                known_station_ids=ctx.known_station_ids)
    result = validate(lf.source, ds, settings=ctx.settings, file=lf.path, context=context)
    report = str(result.report_path) if result.report_path else None
    if not result.accepted:
        reason = {"stage": "validation", **result.to_json()}
        alert = alert_from_validation(result.to_json(), kind="quarantined", report_url=report)
        return _finish(_refuse(lf, ctx, outcome, reason, alert), t0)
    try:
        put = ctx.store.put_grid if get_reader(lf.source).kind == "grid" else ctx.store.put_stations
        changes = put(lf.source, ds, file_name=lf.path.name, file_sha256=sha)
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
    if result.warnings:
        _alert(ctx, alert_from_validation(result.to_json(), kind="validation_warning", report_url=report), outcome)
    dest = archive(lf.path, settings=ctx.settings, source=lf.source, sha256=sha,
                   first_day=outcome.days[0] if outcome.days else None)
    outcome.status, outcome.kept_as = "accepted", str(dest)
    ctx.store.record_delivery(sha256=sha, file_name=lf.path.name, source=lf.source, status="accepted",
                              kept_as=str(dest), days=outcome.days,
                              detail={"changes": outcome.changes, "warnings": [w.check for w in result.warnings]})
    return _finish(outcome, t0)


def _finish(outcome: FileOutcome, t0: float) -> FileOutcome:
    outcome.seconds = time.perf_counter() - t0
    log.info("%s %s: %s %s", outcome.source, outcome.file, outcome.status, outcome.changes or "")
    return outcome


def ingest_all(settings, *, today: date | None = None, dispatcher: AlertDispatcher | None = None) -> IngestReport:
    """Every new landing file, in order (the plain-Python form of the ingest flow)."""
    ctx = IngestContext.create(settings, today=today, dispatcher=dispatcher)
    files, skipped = discover(settings)
    report = IngestReport(skipped=skipped)
    for lf in files:
        report.outcomes.append(ingest_file(lf, ctx))
    ctx.dispatcher.flush()
    return report


# ----------------------------------------------------------------------------- quarantine management
def quarantined(settings) -> list[dict]:
    """Every file in quarantine with its reason record."""
    out = []
    root = settings.folder("quarantine")
    for reason_file in sorted(root.glob("*/*.reason.json")):
        record = json.loads(reason_file.read_text())
        data = reason_file.with_name(reason_file.name[: -len(".reason.json")])
        failed = [o["check"] for o in record.get("outcomes", []) if not o.get("success", True)]
        out.append({"source": reason_file.parent.name, "file": data.name, "path": str(data),
                    "stage": record.get("stage"), "quarantined_at": record.get("quarantined_at"),
                    "why": ", ".join(failed) or record.get("error", ""), "report": record.get("report_path")})
    return out


def release(settings, name: str) -> LandingFile:
    """Move a quarantined file back to ``landing/<source>/`` (after a fix) so it is ingested again."""
    root = settings.folder("quarantine")
    wanted = Path(name).name
    matches = [p for p in root.glob(f"*/{safe_name(wanted)}") if not p.name.endswith(".reason.json")]
    if not matches:
        known = [q["file"] for q in quarantined(settings)]
        raise QuarantineError(f"no quarantined file named {wanted!r}; quarantined: {known or 'none'}")
    if len(matches) > 1:
        raise QuarantineError(f"{wanted!r} is quarantined for several sources ({[m.parent.name for m in matches]}); "
                              "pass SOURCE/NAME")
    data = matches[0]
    source = data.parent.name
    reason = data.with_name(data.name + ".reason.json")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if reason.exists():
        _move(reason, root / source / "released" / f"{data.name}.{stamp}.reason.json")
    dest = settings.folder("landing") / source / data.name
    if dest.exists():
        raise QuarantineError(f"{dest} already exists in landing; ingest or remove it first")
    _move(data, dest)
    return LandingFile(source, dest)
