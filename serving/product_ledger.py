"""The product ledger and its reconciliation with the day files.

``ledger.sqlite`` beside the product files (or a PostgreSQL schema with ``ledger.url``,
etfuse/ledgerdb.py) indexes them: table ``days`` (one row per product day),
``history`` (every write, replace, reconcile fix and yearly build) and ``years``.  The day files
are the truth; ``ProductLedger.reconcile`` makes the ledger agree with them (the guarantees are in
serving/product.py).  ProductLedger is a mixin of serving.product.ProductStore: it uses the store's
``root``, ``day_path``, ``_year_lock`` and ``_file_provenance``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from etfuse.clock import utcnow
from etfuse.errors import EtfuseError
from etfuse.sources.common import file_sha256
from etfuse.ledgerdb import read_frame, schema_name, transaction
from etfuse.tempfiles import remove_orphaned
from serving.cf_product import DayProvenance, iso_utc

log = logging.getLogger("serving.product")

_NAME = re.compile(r"^etfuse_et_(\d{4}-\d{2}-\d{2})\.nc$")
#: Temporary files older than this are removed whoever wrote them [s].
STALE_TMP_SECONDS = 6 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS days (
    day TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, model_version INTEGER NOT NULL, status TEXT NOT NULL,
    sources_used TEXT NOT NULL, written_at TEXT NOT NULL, first_written_at TEXT NOT NULL,
    file_sha256 TEXT NOT NULL, file_size INTEGER NOT NULL, file_mtime_ns INTEGER NOT NULL,
    replaced_count INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, day TEXT NOT NULL, action TEXT NOT NULL,
    fingerprint TEXT, model_version INTEGER, status TEXT, sources_used TEXT, file_sha256 TEXT,
    previous_fingerprint TEXT, previous_model_version INTEGER, previous_status TEXT,
    at TEXT NOT NULL, detail TEXT);
CREATE INDEX IF NOT EXISTS history_day ON history (day);
CREATE TABLE IF NOT EXISTS years (
    year INTEGER PRIMARY KEY, built_at TEXT NOT NULL, days INTEGER NOT NULL, first_day TEXT, last_day TEXT,
    file_sha256 TEXT NOT NULL, build_seconds REAL);
"""


class ProductError(EtfuseError):
    """The product store cannot do what was asked (bad arguments, unknown day, grid mismatch)."""


class DayNotFoundError(ProductError, LookupError):
    """No product for that day."""


@dataclass(frozen=True)
class DayRecord:
    """One product day as the ledger knows it."""

    day: pd.Timestamp
    fingerprint: str
    model_version: int
    status: str
    sources_used: frozenset[str]
    written_at: pd.Timestamp
    path: Path
    file_sha256: str = ""
    replaced_count: int = 0
    first_written_at: pd.Timestamp | None = None


@dataclass
class ReconcileReport:
    """What reconcile found and did (each item is ``YYYY-MM-DD: what``)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    temp_removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.added or self.updated or self.removed or self.corrupt or self.problems)


def _day(value) -> pd.Timestamp:
    try:
        day = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ProductError(f"not a date: {value!r}") from exc
    if pd.isna(day):
        raise ProductError(f"not a date: {value!r}")
    if day.tzinfo is not None:
        day = day.tz_convert("UTC").tz_localize(None)
    if day != day.normalize():
        raise ProductError(f"a product day is a date (00-24 UTC), got {value!r} with a time of day")
    return day



def _sources_text(sources: Iterable[str]) -> str:
    return ",".join(sorted(sources))



class ProductLedger:
    """Mixin of ProductStore: the ledger (rows and history) and reconcile."""

    def _db(self) -> AbstractContextManager:
        """The ledger: ``ledger.sqlite``, or the PostgreSQL schema of this root when ``ledger.url`` is set."""
        return transaction(self.settings.ledger.url, self.root / "ledger.sqlite", schema_name("product", self.root))

    def _row_to_record(self, row) -> DayRecord:
        (day, fingerprint, model_version, status, sources, written_at, first_written_at, sha, replaced) = row
        return DayRecord(day=pd.Timestamp(day), fingerprint=fingerprint, model_version=int(model_version),
                         status=status, sources_used=frozenset(s for s in sources.split(",") if s),
                         written_at=pd.Timestamp(written_at), path=self.day_path(day), file_sha256=sha,
                         replaced_count=int(replaced), first_written_at=pd.Timestamp(first_written_at))

    _RECORD_COLUMNS = ("day, fingerprint, model_version, status, sources_used, written_at, first_written_at, "
                       "file_sha256, replaced_count")

    def record(self, day) -> DayRecord | None:
        with self._db() as db:
            row = db.execute(f"SELECT {self._RECORD_COLUMNS} FROM days WHERE day=?",
                             (f"{_day(day):%Y-%m-%d}",)).fetchone()
        return self._row_to_record(row) if row else None

    def _ledger_state(self) -> tuple:
        """(size, mtime) of the ledger and its write-ahead log: changes with every commit.  In
        PostgreSQL: the newest history row and the number of days (every change of a day's record
        writes a history row)."""
        if self.settings.ledger.url is not None:
            with self._db() as db:
                return tuple(db.execute("SELECT (SELECT MAX(id) FROM history), (SELECT COUNT(*) FROM days)").fetchone())
        out = []
        for name in ("ledger.sqlite", "ledger.sqlite-wal"):
            try:
                stat = (self.root / name).stat()
                out += [stat.st_size, stat.st_mtime_ns]
            except FileNotFoundError:
                out += [None, None]
        return tuple(out)

    def records(self, start=None, end=None) -> list[DayRecord]:
        """Ledger rows of [start, end], oldest first.  The whole table is cached until the ledger
        changes: building a year's records costs about 80 ms, and the API asks on every request."""
        state = self._ledger_state()
        cached = self._records_cache
        if cached is None or cached[0] != state:
            with self._db() as db:
                rows = db.execute(f"SELECT {self._RECORD_COLUMNS} FROM days ORDER BY day").fetchall()
            cached = self._records_cache = (state, [self._row_to_record(r) for r in rows])
        first = _day(start) if start is not None else None
        last = _day(end) if end is not None else None
        return [r for r in cached[1] if (first is None or r.day >= first) and (last is None or r.day <= last)]

    def days(self) -> list[pd.Timestamp]:
        with self._db() as db:
            return [pd.Timestamp(r[0]) for r in db.execute("SELECT day FROM days ORDER BY day")]

    def provisional_days(self, start=None, end=None) -> list[pd.Timestamp]:
        """Days still provisional: the update flow re-checks their inputs."""
        return [r.day for r in self.records(start, end) if r.status == "provisional"]

    def history(self, day=None) -> pd.DataFrame:
        """Every write, replace, reconcile fix and yearly build, oldest first."""
        query, args = "SELECT * FROM history", []
        if day is not None:
            query += " WHERE day=?"
            args.append(f"{_day(day):%Y-%m-%d}")
        with self._db() as db:
            return read_frame(db, query + " ORDER BY id", args)

    @staticmethod
    def _history(db, day: str, action: str, prov: DayProvenance | None, sha: str | None,
                 previous: DayProvenance | None = None, detail: Mapping | None = None,
                 at: str | None = None) -> None:
        db.execute(
            "INSERT INTO history (day, action, fingerprint, model_version, status, sources_used, file_sha256, "
            "previous_fingerprint, previous_model_version, previous_status, at, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (day, action, prov.fingerprint if prov else None, prov.model_version if prov else None,
             prov.status if prov else None, _sources_text(prov.sources_used) if prov else None, sha,
             previous.fingerprint if previous else None, previous.model_version if previous else None,
             previous.status if previous else None, at or iso_utc(utcnow()),
             json.dumps(dict(detail)) if detail else None))

    def _upsert(self, db, prov: DayProvenance, path: Path, sha: str, written_at: str,
                replaced: bool) -> None:
        stat = path.stat()
        key = f"{prov.day:%Y-%m-%d}"
        old = db.execute("SELECT first_written_at, replaced_count FROM days WHERE day=?", (key,)).fetchone()
        first = old[0] if old else written_at
        count = (old[1] if old else 0) + (1 if replaced else 0)
        db.execute("INSERT OR REPLACE INTO days VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   (key, prov.fingerprint, prov.model_version, prov.status, _sources_text(prov.sources_used),
                    written_at, first, sha, stat.st_size, stat.st_mtime_ns, count))

    def _ensure_ledger(self, path: Path, prov: DayProvenance) -> None:
        """Make the ledger row agree with an unchanged stored file (repairs a crash after a rename)."""
        key = f"{prov.day:%Y-%m-%d}"
        stat = path.stat()
        with self._db() as db:
            row = db.execute("SELECT fingerprint, model_version, status, sources_used, file_size, file_mtime_ns "
                             "FROM days WHERE day=?", (key,)).fetchone()
            expected = (prov.fingerprint, prov.model_version, prov.status, _sources_text(prov.sources_used),
                        stat.st_size, stat.st_mtime_ns)
            if row is not None and tuple(row) == expected:
                return
            sha = file_sha256(path)
            self._upsert(db, prov, path, sha, iso_utc(datetime.fromtimestamp(stat.st_mtime, timezone.utc)),
                         replaced=False)
            self._history(db, key, "reconciled", prov, sha,
                          detail={"reason": "ledger row missing or out of date for the stored file"})
        log.warning("product %s: ledger row repaired from the stored file", key)

    def _move_corrupt(self, path: Path, key: str, reason: str) -> Path:
        target = self.root / "corrupt" / f"{path.name}.{utcnow():%Y%m%dT%H%M%S%f}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        with self._db() as db:
            db.execute("DELETE FROM days WHERE day=?", (key,))
            self._history(db, key, "corrupt_moved", None, None, detail={"moved_to": str(target), "reason": reason})
        return target

    # ------------------------------------------------------------------ reconcile
    def reconcile(self, full: bool = False) -> ReconcileReport:
        """Make the ledger agree with the files on disk; remove dead writers' temporary files.

        A row is checked by file size and mtime (``full=True``: by SHA-256 of every file).
        """
        report = ReconcileReport()
        self._clean_temp_files(report)
        on_disk: dict[str, Path] = {}
        for path in sorted((self.root / "daily").glob("*/etfuse_et_*.nc")):
            match = _NAME.match(path.name)
            if match and path.parent.name == match.group(1)[:4]:
                on_disk[match.group(1)] = path
        with self._db() as db:
            rows = {r[0]: r[1:] for r in db.execute(
                "SELECT day, file_sha256, file_size, file_mtime_ns FROM days")}
        for key, path in on_disk.items():
            row = rows.get(key)
            stat = path.stat()
            if row is not None and (row[1], row[2]) == (stat.st_size, stat.st_mtime_ns) and not full:
                continue
            if row is not None and full and row[0] == file_sha256(path):
                continue
            with self._year_lock(int(key[:4])):
                self._reconcile_day(key, path, report)
        for key in sorted(set(rows) - set(on_disk)):
            with self._year_lock(int(key[:4])):
                if self.day_path(key).exists():
                    continue
                with self._db() as db:
                    db.execute("DELETE FROM days WHERE day=?", (key,))
                    self._history(db, key, "reconciled_missing", None, None,
                                  detail={"reason": "the ledger had a row but the day's file is gone"})
                report.removed.append(f"{key}: file missing, ledger row removed")
        for item in report.added + report.updated + report.removed + report.corrupt + report.problems:
            log.warning("product reconcile: %s", item)
        return report

    def _reconcile_day(self, key: str, path: Path, report: ReconcileReport) -> None:
        if not path.exists():
            return
        try:
            prov = self._file_provenance(path)
        except ProductError as exc:            # a readable file on another grid: reported, not touched
            report.problems.append(f"{key}: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - unreadable: moved aside, the day is recomputed later
            target = self._move_corrupt(path, key, str(exc))
            report.corrupt.append(f"{key}: unreadable ({exc}); moved to {target}")
            return
        if f"{prov.day:%Y-%m-%d}" != key:
            report.problems.append(f"{key}: {path.name} holds the day {prov.day:%Y-%m-%d}")
            return
        sha = file_sha256(path)
        stat = path.stat()
        with self._db() as db:
            row = db.execute("SELECT fingerprint, model_version, status, sources_used, file_sha256 FROM days "
                             "WHERE day=?", (key,)).fetchone()
            if row is not None and row[4] == sha:
                db.execute("UPDATE days SET file_size=?, file_mtime_ns=? WHERE day=?",
                           (stat.st_size, stat.st_mtime_ns, key))
                return
            self._upsert(db, prov, path, sha, iso_utc(datetime.fromtimestamp(stat.st_mtime, timezone.utc)),
                         replaced=row is not None)
            previous = (DayProvenance(prov.day, int(row[1]), row[2], frozenset(filter(None, row[3].split(","))), row[0])
                        if row is not None else None)
            self._history(db, key, "reconciled", prov, sha, previous=previous,
                          detail={"reason": "file without ledger row" if row is None else "file differs from ledger"})
        (report.added if row is None else report.updated).append(
            f"{key}: {'file without ledger row' if row is None else 'file differs from ledger'}; "
            f"ledger set from the file (model v{prov.model_version}, {prov.status})")

    def _clean_temp_files(self, report: ReconcileReport) -> None:
        folders = [self.root, *self.root.glob("daily/*"), *self.root.glob("quicklooks/*")]
        removed = remove_orphaned((tmp for folder in folders for tmp in folder.glob(".*.tmp")),
                                  stale_seconds=STALE_TMP_SECONDS)
        report.temp_removed.extend(str(tmp.relative_to(self.root)) for tmp in removed)

