"""The product store: daily ET NetCDF files, yearly files for users, a ledger and quicklooks.

Layout under ``settings.folder("product")`` (docs/product.md describes the files for users)::

    daily/<YYYY>/etfuse_et_<YYYY-MM-DD>.nc     operational store: one file per day (chunks 1 x 64 x 64)
    etfuse_et_<YYYY>.nc                        yearly file users receive (chunks 4 x 64 x 64), built
                                               from the daily files by build_year()
    quicklooks/<YYYY>/etfuse_et_<YYYY-MM-DD>.png
    ledger.sqlite                              table days (one row per product day), history (every
                                               write, replace, reconcile, yearly build), years
    corrupt/                                   unreadable day files moved aside by reconcile (never deleted)

Guarantees:

* **Atomic.** Every file is written under a temporary name in its final folder
  (``.<name>.<host>.<pid>.<random>.tmp``), fsync'ed, re-opened to check it, and ``os.replace``d
  over the old one; the folder is fsync'ed after the rename.  HDF5 is not crash-safe and locks
  files, so nothing is ever appended in place: a crash at any moment leaves the previous version
  (or no file) under the final name.  Temporary files never match the product names, and
  reconcile removes those whose writer is dead.
* **Idempotent.** The key of a day is (input fingerprint, model version), read from the stored
  file itself (the file is the truth; the ledger is its index): the same key again is
  ``unchanged`` and touches nothing; a different key (or a different status or source set for the
  same key) is ``replaced``: the day's file is rewritten whole, so a day is never duplicated.  A
  final day is not downgraded to provisional unless ``allow_downgrade=True``.
* **Ledger agrees with the files.** Opening a store reconciles: day files without a ledger row,
  rows whose file changed (size, mtime, then SHA-256) or vanished, and unreadable files are
  detected and fixed (the file wins; unreadable files are moved to ``corrupt/``), each fix written
  to ``history`` and to the log.  A crash between the rename and the ledger update is therefore
  repaired on the next open (or by the next write of that day).
* **Readers** see whole files only.  ``read_point`` reads the yearly file for every day whose
  provenance there equals the ledger's (one 64 x 64 tile column), and the daily file for the
  others (days written since the last build_year), so it is always current.

Writers of the same year are serialised by ``daily/<YYYY>/.lock`` (fcntl); netCDF-C is not
thread-safe, so every netCDF call of this module runs under one process-wide lock.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import re
import sqlite3
import sys
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Literal, Mapping, Sequence

import netCDF4
import numpy as np
import pandas as pd
import xarray as xr

from etfuse.errors import EtfuseError
from etfuse.grid import TargetGrid
from etfuse.tempfiles import remove_orphaned, temporary_name
from serving import quicklook as ql
from serving.distribution import publish_day
from serving.cf_product import (SOURCE_BITS, STATUS_CODES, STATUS_NAMES, DayProvenance, global_attributes, iso_utc,
                                read_provenance, utc_now, write_product_file)

log = logging.getLogger(__name__)

Action = Literal["written", "unchanged", "replaced"]

#: Chunk shapes (time, lat, lon), measured on the province grid (bench/product_io.py, results in
#: bench/results.md and docs/product.md).  A point's series costs the bytes of its 64 x 64 tile on
#: every day, whatever the time length of a chunk; a day's map costs the whole grid times the
#: chunk's time length.  Yearly files: 4 days x 64 x 64 reads a year at a point in about 0.02 s and
#: a day's map in about 0.07 s for 1 % more bytes than 8 x 128 x 128 (0.08 s and 0.13 s).  Daily
#: files use the same tiles, one day deep: a map in 0.02 s, a point in about 3 ms (mostly the
#: file's open) instead of 15 ms for one whole-day chunk.
DAILY_CHUNKS = (1, 64, 64)
YEARLY_CHUNKS = (4, 64, 64)

_NAME = re.compile(r"^etfuse_et_(\d{4}-\d{2}-\d{2})\.nc$")
#: Temporary files older than this are removed whoever wrote them [s].
STALE_TMP_SECONDS = 6 * 3600
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")

#: product files kept open by a store for reading (yearly and daily files, least recently used closed)
OPEN_FILES = 64

#: netCDF-C / HDF5 are not thread-safe: one lock for every netCDF call made here.
_NC_LOCK = threading.RLock()

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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sources_text(sources: Iterable[str]) -> str:
    return ",".join(sorted(sources))


class ProductStore:
    """The daily ET product; see the module docstring for layout and guarantees."""

    def __init__(self, settings, grid: TargetGrid | None = None, *, reconcile: bool = True,
                 metadata: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.grid = grid or TargetGrid.from_region(settings.region)
        self.region_name = (settings.region.name if self.grid == TargetGrid.from_region(settings.region)
                            else "custom")
        self.root = Path(settings.folder("product"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.metadata = dict(metadata or {})
        self._yearly_cache: dict[Path, tuple[tuple, dict[pd.Timestamp, tuple[int, DayProvenance]]]] = {}
        #: open product files by path, with the (inode, size, mtime) they were opened at: opening a
        #: yearly HDF5 file costs 15-30 ms, a point's year from an open file about 1 ms, and a daily
        #: file's open is most of an area read (bench/api_load.py); least recently used closed first
        self._handles: OrderedDict[Path, tuple[tuple, netCDF4.Dataset]] = OrderedDict()
        self._records_cache: tuple[tuple, list[DayRecord]] | None = None       # see records()
        with self._db() as db:
            db.executescript(_SCHEMA)
        self.last_reconcile = self.reconcile() if reconcile else ReconcileReport()

    # ------------------------------------------------------------------ paths
    def day_path(self, day) -> Path:
        day = _day(day)
        return self.root / "daily" / f"{day:%Y}" / f"etfuse_et_{day:%Y-%m-%d}.nc"

    def year_path(self, year: int) -> Path:
        return self.root / f"etfuse_et_{int(year):04d}.nc"

    def quicklook_path(self, day) -> Path:
        day = _day(day)
        return self.root / "quicklooks" / f"{day:%Y}" / f"etfuse_et_{day:%Y-%m-%d}.png"

    # ------------------------------------------------------------------ ledger
    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.root / "ledger.sqlite", timeout=60)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with db:
                yield db
        finally:
            db.close()

    @contextmanager
    def _year_lock(self, year: int) -> Iterator[None]:
        folder = self.root / "daily" / f"{int(year):04d}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

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
        """(size, mtime) of the ledger and its write-ahead log: changes with every commit."""
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
            return pd.read_sql_query(query + " ORDER BY id", db, params=args)

    @staticmethod
    def _history(db: sqlite3.Connection, day: str, action: str, prov: DayProvenance | None, sha: str | None,
                 previous: DayProvenance | None = None, detail: Mapping | None = None,
                 at: str | None = None) -> None:
        db.execute(
            "INSERT INTO history (day, action, fingerprint, model_version, status, sources_used, file_sha256, "
            "previous_fingerprint, previous_model_version, previous_status, at, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (day, action, prov.fingerprint if prov else None, prov.model_version if prov else None,
             prov.status if prov else None, _sources_text(prov.sources_used) if prov else None, sha,
             previous.fingerprint if previous else None, previous.model_version if previous else None,
             previous.status if previous else None, at or iso_utc(utc_now()),
             json.dumps(dict(detail)) if detail else None))

    def _upsert(self, db: sqlite3.Connection, prov: DayProvenance, path: Path, sha: str, written_at: str,
                replaced: bool) -> None:
        stat = path.stat()
        key = f"{prov.day:%Y-%m-%d}"
        old = db.execute("SELECT first_written_at, replaced_count FROM days WHERE day=?", (key,)).fetchone()
        first = old[0] if old else written_at
        count = (old[1] if old else 0) + (1 if replaced else 0)
        db.execute("INSERT OR REPLACE INTO days VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   (key, prov.fingerprint, prov.model_version, prov.status, _sources_text(prov.sources_used),
                    written_at, first, sha, stat.st_size, stat.st_mtime_ns, count))

    # ------------------------------------------------------------------ reading one file's provenance
    def _file_provenance(self, path: Path) -> DayProvenance:
        with _NC_LOCK, netCDF4.Dataset(path, "r") as nc:
            prov = read_provenance(nc)
            shape = (nc.dimensions["lat"].size, nc.dimensions["lon"].size)
        if len(prov) != 1:
            raise ProductError(f"{path}: a daily product file holds {len(prov)} days, expected 1")
        if shape != self.grid.shape:
            raise ProductError(f"{path}: grid {shape[0]} x {shape[1]} differs from the store's grid "
                               f"{self.grid.shape[0]} x {self.grid.shape[1]} ({self.grid.key()})")
        return prov[0]

    # ------------------------------------------------------------------ writing a day
    def _check_write_args(self, et_mm, model_version, status, sources_used, fingerprint) -> np.ndarray:
        if status not in STATUS_CODES:
            raise ProductError(f"status must be one of {sorted(STATUS_CODES)}, got {status!r}")
        unknown = set(sources_used) - set(SOURCE_BITS)
        if unknown:
            raise ProductError(f"unknown sources {sorted(unknown)}; expected a subset of {sorted(SOURCE_BITS)}")
        if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
            raise ProductError(f"fingerprint must be a SHA-256 hex digest (64 lower-case hex characters), "
                               f"got {fingerprint!r}")
        if isinstance(model_version, bool) or int(model_version) != model_version or int(model_version) < 0:
            raise ProductError(f"model_version must be a non-negative integer, got {model_version!r}")
        arr = np.asarray(et_mm)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.shape != self.grid.shape:
            raise ProductError(f"ET field has shape {arr.shape}, expected the grid's {self.grid.shape} "
                               f"(rows north to south, columns west to east)")
        arr = arr.astype(np.float32, copy=False)
        if np.isinf(arr).any():
            raise ProductError("ET field holds infinite values")
        return arr

    def write_day(self, day, et_mm: np.ndarray, *, model_version: int, status: str, sources_used: Iterable[str],
                  fingerprint: str, allow_downgrade: bool = False, quicklook: bool | None = None,
                  execution_provider: str | None = None) -> Action:
        """Store one product day: ``written`` (new), ``unchanged`` (same key) or ``replaced``.

        ``et_mm`` is the day's total [mm = kg m-2] on the grid (rows north to south), NaN where
        there is no value.  ``quicklook`` (default ``settings.serving.quicklooks``) also draws the
        day's PNG after a write (a failure to draw is logged, not raised: the product is stored).
        ``execution_provider`` (the onnxruntime provider that computed the day, e.g.
        ``CUDAExecutionProvider``) goes into the file's global attribute ``etfuse_execution_provider``,
        its ``history`` and the ledger's history row (``detail``).
        """
        day = _day(day)
        arr = self._check_write_args(et_mm, model_version, status, sources_used, fingerprint)
        prov = DayProvenance(day, int(model_version), status, frozenset(sources_used), fingerprint)
        path = self.day_path(day)
        key = f"{day:%Y-%m-%d}"
        with self._year_lock(day.year):
            stored: DayProvenance | None = None
            if path.exists():
                try:
                    stored = self._file_provenance(path)
                except Exception as exc:  # noqa: BLE001 - any unreadable file is replaced
                    log.warning("product %s: stored file %s is unreadable (%s); it is moved aside and rewritten",
                                key, path, exc)
                    self._move_corrupt(path, key, str(exc))
            if stored is not None and (stored.fingerprint, stored.model_version) == (fingerprint, prov.model_version) \
                    and stored.status == status and stored.sources_used == prov.sources_used:
                self._ensure_ledger(path, stored)
                return "unchanged"
            if stored is not None and stored.status == "final" and status == "provisional" and not allow_downgrade:
                raise ProductError(
                    f"product {key} is final (model v{stored.model_version}); refusing to replace it with a "
                    f"provisional day (model v{prov.model_version}); pass allow_downgrade=True if that is meant")
            action: Action = "replaced" if stored is not None else "written"
            on = f", on {execution_provider}" if execution_provider else ""
            sha = self._write_file(path, [prov], lambda t0, t1: arr[None], DAILY_CHUNKS,
                                   ident=f"etfuse_et_{key}", period=key, start=day,
                                   end=day + pd.Timedelta(days=1),
                                   history=(f"{iso_utc(utc_now())} etfuse write_day: model v{prov.model_version}, "
                                            f"{status}, sources {_sources_text(prov.sources_used) or 'none'}{on}"),
                                   extra_attrs={"etfuse_execution_provider": execution_provider}
                                   if execution_provider else None)
            now = iso_utc(utc_now())
            with self._db() as db:
                self._upsert(db, prov, path, sha, now, replaced=action == "replaced")
                detail = None
                if stored is not None and (stored.fingerprint, stored.model_version) == (fingerprint, prov.model_version):
                    detail = {"reason": "status or sources changed for the same fingerprint and model"}
                if execution_provider:
                    detail = {**(detail or {}), "execution_provider": execution_provider}
                self._history(db, key, action, prov, sha, previous=stored, detail=detail, at=now)
            publish_day(self, day)         # STAC item and Zarr region, under the year lock (serving/distribution.py)
        draw = self.settings.serving.quicklooks if quicklook is None else quicklook
        if draw:
            try:
                self.quicklook(day)
            except Exception:  # noqa: BLE001 - the product is stored; the picture can be redrawn
                log.exception("product %s: the quicklook could not be drawn (the day is stored)", key)
        return action

    def _write_file(self, path: Path, provenance: Sequence[DayProvenance], blocks, chunks, *, ident: str,
                    period: str, start: pd.Timestamp, end: pd.Timestamp, history: str,
                    extra_attrs: dict[str, str] | None = None) -> str:
        """Write-then-rename one product file; returns its SHA-256."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(path)
        now = utc_now()
        attrs = global_attributes(self.grid, region_name=self.region_name, ident=ident, period_label=period,
                                  start=start, end_exclusive=end,
                                  model_versions=[p.model_version for p in provenance], history=history,
                                  created=now, modified=now, metadata=self.metadata)
        attrs.update(extra_attrs or {})
        serving = self.settings.serving
        n_lat, n_lon = self.grid.shape
        chunks = (min(chunks[0], len(provenance)), min(chunks[1], n_lat), min(chunks[2], n_lon))
        try:
            write_product_file(tmp, self.grid, provenance, blocks, chunks=chunks,
                               compression_level=serving.compression_level,
                               least_significant_digit=serving.least_significant_digit, global_attrs=attrs,
                               lock=_NC_LOCK)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            with _NC_LOCK, netCDF4.Dataset(tmp, "r") as nc:      # a file that does not open never replaces one
                if nc.dimensions["time"].size != len(provenance):
                    raise ProductError(f"{tmp}: wrote {nc.dimensions['time'].size} days, expected {len(provenance)}")
            sha = _sha256(tmp)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        finally:
            if tmp.exists():
                tmp.unlink()
        return sha

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
            sha = _sha256(path)
            self._upsert(db, prov, path, sha, iso_utc(datetime.fromtimestamp(stat.st_mtime, timezone.utc)),
                         replaced=False)
            self._history(db, key, "reconciled", prov, sha,
                          detail={"reason": "ledger row missing or out of date for the stored file"})
        log.warning("product %s: ledger row repaired from the stored file", key)

    def _move_corrupt(self, path: Path, key: str, reason: str) -> Path:
        target = self.root / "corrupt" / f"{path.name}.{utc_now():%Y%m%dT%H%M%S%f}"
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
            if row is not None and full and row[0] == _sha256(path):
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
        sha = _sha256(path)
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

    # ------------------------------------------------------------------ reading
    def read_day(self, day) -> xr.Dataset | None:
        """One day as a loaded dataset (``et`` NaN where missing, provenance on ``time``), or None."""
        path = self.day_path(day)
        if not path.exists():
            return None
        with _NC_LOCK, xr.open_dataset(path, engine="netcdf4") as ds:
            return ds.load()

    def _cell(self, lat: float, lon: float) -> tuple[int, int]:
        rows, cols = self.grid.cell_of(lat, lon)
        row, col = int(rows), int(cols)
        if row < 0 or col < 0:
            w, s, e, n = self.grid.bbox()
            raise ProductError(f"point ({lat:g} N, {lon:g} E) lies outside the product grid "
                               f"({w:g}-{e:g} E, {s:g}-{n:g} N)")
        return row, col

    def _yearly_index(self, year: int) -> dict[pd.Timestamp, tuple[int, DayProvenance]]:
        """day -> (time index, provenance) of the yearly file (cached per file version)."""
        path = self.year_path(year)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return {}
        key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        cached = self._yearly_cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            with _NC_LOCK, netCDF4.Dataset(path, "r") as nc:
                index = {p.day: (k, p) for k, p in enumerate(read_provenance(nc))}
        except Exception as exc:  # noqa: BLE001 - a broken yearly file is just not used
            log.warning("yearly product %s is unreadable (%s); reading daily files instead", path, exc)
            index = {}
        self._yearly_cache[path] = (key, index)
        return index

    def _handle(self, path: Path) -> netCDF4.Dataset:
        """``path`` opened for reading, kept open while its (inode, size, mtime) stays; call under ``_NC_LOCK``.

        A replaced file is a new inode (write-then-rename), so a stale handle is closed and the new
        file opened; a vanished file raises FileNotFoundError.  At most ``OPEN_FILES`` stay open.
        """
        stat = path.stat()
        key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        cached = self._handles.get(path)
        if cached is not None and cached[0] == key:
            self._handles.move_to_end(path)
            return cached[1]
        if cached is not None:
            self._handles.pop(path)[1].close()
        nc = netCDF4.Dataset(path, "r")
        self._handles[path] = (key, nc)
        while len(self._handles) > OPEN_FILES:
            self._handles.popitem(last=False)[1][1].close()
        return nc

    @staticmethod
    def _same(record: DayRecord, prov: DayProvenance) -> bool:
        return (record.fingerprint, record.model_version, record.status, record.sources_used) == \
               (prov.fingerprint, prov.model_version, prov.status, prov.sources_used)

    def read_point(self, lat: float, lon: float, start=None, end=None) -> pd.DataFrame:
        """Daily ET of the cell holding (lat, lon): columns date, et_mm, status, model_version.

        Days without a product are absent (not NaN rows).  ``frame.attrs`` holds the cell's
        centre (``cell_lat``, ``cell_lon``) and how many days came from yearly / daily files.
        """
        row, col = self._cell(lat, lon)
        records = self.records(start, end)
        out: dict[pd.Timestamp, tuple[float, str, int]] = {}
        from_yearly = 0
        for year in sorted({r.day.year for r in records}):
            recs = [r for r in records if r.day.year == year]
            index = self._yearly_index(year)
            use = {r.day: index[r.day][0] for r in recs if r.day in index and self._same(r, index[r.day][1])}
            if use:
                try:
                    with _NC_LOCK:
                        nc = self._handle(self.year_path(year))
                        ks = sorted(use.values())
                        series = np.ma.filled(nc["et"][ks[0]:ks[-1] + 1, row, col].astype(np.float64), np.nan)
                    for r in recs:
                        if r.day in use:
                            out[r.day] = (float(series[use[r.day] - ks[0]]), r.status, r.model_version)
                    from_yearly += len(use)
                except (OSError, RuntimeError) as exc:  # replaced between index and read: fall back
                    log.warning("yearly product %s could not be read (%s); reading daily files", year, exc)
                    out = {d: v for d, v in out.items() if d.year != year}
            for r in recs:
                if r.day in out:
                    continue
                try:
                    with _NC_LOCK, netCDF4.Dataset(r.path, "r") as nc:
                        value = float(np.ma.filled(nc["et"][0, row, col], np.nan))
                        status = STATUS_NAMES.get(int(nc["product_status"][0]), "unknown")
                        model_version = int(nc["model_version"][0])
                except FileNotFoundError:
                    continue                      # removed since the ledger was read
                out[r.day] = (value, status, model_version)
        days = sorted(out)
        frame = pd.DataFrame({"date": pd.DatetimeIndex(days),
                              "et_mm": np.array([out[d][0] for d in days], dtype=np.float64),
                              "status": [out[d][1] for d in days],
                              "model_version": np.array([out[d][2] for d in days], dtype=np.int64)})
        frame.attrs.update({"cell_lat": float(self.grid.lat[row]), "cell_lon": float(self.grid.lon[col]),
                            "row": row, "col": col, "days_from_yearly": from_yearly,
                            "days_from_daily": len(days) - from_yearly})
        return frame

    def area_window(self, bbox: tuple[float, float, float, float]) -> tuple[slice, slice]:
        """Row and column slices of the cells whose centres lie inside (west, south, east, north)."""
        west, south, east, north = map(float, bbox)
        if not (west < east and south < north):
            raise ProductError(f"bbox must be (west, south, east, north) with west < east and south < north, "
                               f"got {bbox}")
        lat, lon = self.grid.lat, self.grid.lon
        rows = np.flatnonzero((lat >= south) & (lat <= north))
        cols = np.flatnonzero((lon >= west) & (lon <= east))
        if rows.size == 0 or cols.size == 0:
            w, s, e, n = self.grid.bbox()
            raise ProductError(f"bbox {bbox} holds no cell centre of the product grid ({w:g}-{e:g} E, {s:g}-{n:g} N)")
        return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)

    def read_area(self, bbox: tuple[float, float, float, float], day) -> np.ndarray:
        """ET [mm] of the cells inside ``bbox`` on ``day`` (rows north to south), NaN where missing."""
        rows, cols = self.area_window(bbox)
        path = self.day_path(day)
        try:
            with _NC_LOCK:
                values = self._handle(path)["et"][0, rows, cols]
        except FileNotFoundError:
            raise DayNotFoundError(f"no product for {_day(day):%Y-%m-%d}") from None
        return np.ma.filled(values.astype(np.float32), np.nan)

    def read_field(self, day) -> np.ndarray:
        """The whole day's ET [mm] (rows north to south), NaN where missing."""
        path = self.day_path(day)
        try:
            with _NC_LOCK:
                values = self._handle(path)["et"][0]
        except FileNotFoundError:
            raise DayNotFoundError(f"no product for {_day(day):%Y-%m-%d}") from None
        return np.ma.filled(values.astype(np.float32), np.nan)

    # ------------------------------------------------------------------ yearly files
    def stale_years(self) -> list[int]:
        """Years whose yearly file is missing or differs from the daily store (days or provenance)."""
        by_year: dict[int, list[DayRecord]] = {}
        for r in self.records():
            by_year.setdefault(r.day.year, []).append(r)
        stale = []
        for year, recs in sorted(by_year.items()):
            index = self._yearly_index(year)
            if len(index) != len(recs) or not all(r.day in index and self._same(r, index[r.day][1]) for r in recs):
                stale.append(year)
        return stale

    def build_year(self, year: int) -> Path | None:
        """(Re)build ``etfuse_et_<YYYY>.nc`` from the year's daily files; None if there are none.

        The time axis holds every day of the year that has a daily file, in order (no fill days).
        Each day's values and provenance come from one open daily file, so a day replaced during
        the build is either the old or the new version; read_point notices the difference from the
        ledger and reads such a day from its daily file until the next build.
        """
        t_begin = time.perf_counter()
        year = int(year)
        paths = sorted(p for p in (self.root / "daily" / f"{year:04d}").glob(f"etfuse_et_{year:04d}-*.nc")
                       if _NAME.match(p.name))
        if not paths:
            return None
        provenance: list[DayProvenance] = []
        usable: list[Path] = []
        for p in paths:
            try:
                provenance.append(self._file_provenance(p))
                usable.append(p)
            except Exception as exc:  # noqa: BLE001 - reconcile deals with it; the year is built without
                log.warning("build_year %d: skipping %s (%s)", year, p, exc)
        if not usable:
            return None

        def blocks(t0: int, t1: int) -> np.ndarray:
            out = np.empty((t1 - t0,) + self.grid.shape, dtype=np.float32)
            for k in range(t0, t1):
                with _NC_LOCK, netCDF4.Dataset(usable[k], "r") as nc:
                    prov = read_provenance(nc)[0]
                    if prov != provenance[k]:       # replaced since the provenance pass
                        provenance[k] = prov
                    et = nc["et"]
                    et.set_auto_mask(False)          # keeps the fill value as it is: no masked arrays
                    out[k - t0] = et[0]
            return out

        first, last = provenance[0].day, provenance[-1].day
        path = self.year_path(year)
        sha = self._write_file(
            path, provenance, blocks, YEARLY_CHUNKS, ident=f"etfuse_et_{year:04d}", period=f"{year:04d}",
            start=first, end=last + pd.Timedelta(days=1),
            history=f"{iso_utc(utc_now())} etfuse build_year: {len(usable)} daily files "
                    f"{first:%Y-%m-%d}..{last:%Y-%m-%d}")
        # A day replaced after blocks() read it leaves the yearly file with the older version and
        # its provenance: read_point then reads that day from its daily file until the next build.
        seconds = time.perf_counter() - t_begin
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO years VALUES (?,?,?,?,?,?,?)",
                       (year, iso_utc(utc_now()), len(usable), f"{first:%Y-%m-%d}", f"{last:%Y-%m-%d}", sha, seconds))
            self._history(db, f"{year:04d}", "year_built", None, sha,
                          detail={"days": len(usable), "first": f"{first:%Y-%m-%d}", "last": f"{last:%Y-%m-%d}",
                                  "seconds": round(seconds, 2)})
        return path

    # ------------------------------------------------------------------ quicklooks
    def quicklook(self, day) -> Path:
        """The day's PNG, drawn if missing or older than the stored day (by file SHA-256)."""
        day = _day(day)
        record = self.record(day)
        if record is None or not record.path.exists():
            raise DayNotFoundError(f"no product for {day:%Y-%m-%d}")
        png = self.quicklook_path(day)
        if png.exists() and ql.png_text(png).get("etfuse_file_sha256") == record.file_sha256:
            return png
        field_mm = self.read_field(day)
        sources = ", ".join(sorted(record.sources_used)) or "none"
        valid = np.isfinite(field_mm)
        mean = float(field_mm[valid].mean()) if valid.any() else float("nan")
        return ql.render(
            png, field_mm, self.grid.bbox(),
            title=f"etfuse daily ET {day:%Y-%m-%d} - {record.status} - model v{record.model_version}",
            subtitle=(f"00-24 UTC total, region mean {mean:.2f} mm, sources: {sources}\n"
                      f"{self.grid.resolution_deg:g} deg grid, {int((~valid).sum())} cells without value"),
            metadata={"Title": f"etfuse ET {day:%Y-%m-%d}", "etfuse_day": f"{day:%Y-%m-%d}",
                      "etfuse_status": record.status, "etfuse_model_version": str(record.model_version),
                      "etfuse_fingerprint": record.fingerprint, "etfuse_file_sha256": record.file_sha256})


# ---------------------------------------------------------------------- self-test writer (kill tests)
def selftest_fingerprint(i: int) -> str:
    return hashlib.sha256(f"etfuse-selftest-{i}".encode()).hexdigest()


def selftest_field(shape: tuple[int, int], i: int) -> np.ndarray:
    """A deterministic ET field [mm] for self-test iteration ``i`` (0-6 mm, a few NaN cells)."""
    rows, cols = shape
    y = np.linspace(0.0, 1.0, rows, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, cols, dtype=np.float32)[None, :]
    field_mm = 3.0 + 2.5 * np.sin(6.0 * x + 0.7 * i) * np.cos(4.0 * y - 0.3 * i) + 0.05 * (i % 7)
    field_mm = field_mm.astype(np.float32)
    field_mm[: max(1, rows // 50), : max(1, cols // 50)] = np.nan
    return field_mm


def _selftest_write(args: argparse.Namespace) -> int:
    from etfuse.settings import load_settings
    w, s, e, n, res = (float(v) for v in args.region.split(","))
    settings = load_settings(home=args.home, region={"name": "selftest", "lon_min": w, "lat_min": s, "lon_max": e,
                                                     "lat_max": n, "resolution_deg": res},
                             serving={"quicklooks": bool(args.quicklooks)})
    store = ProductStore(settings)
    day = _day(args.day)
    print("ready", flush=True)
    for i in range(args.start, args.start + args.iterations):
        action = store.write_day(day, selftest_field(store.grid.shape, i), model_version=1 + i % 3,
                                 status="final", sources_used={"era5land", "gleam"},
                                 fingerprint=selftest_fingerprint(i))
        print(f"wrote {i} {action}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.product", description=__doc__.split("\n")[0])
    parser.add_argument("--selftest-write", dest="home", metavar="HOME",
                        help="write one day again and again under HOME (for crash tests: kill it at any moment)")
    parser.add_argument("--day", default="2021-07-15")
    parser.add_argument("--region", default="100.5,35.5,102.5,37.5,0.01", help="west,south,east,north,resolution")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--quicklooks", action="store_true")
    args = parser.parse_args(argv)
    if not args.home:
        parser.print_help()
        return 2
    return _selftest_write(args)


if __name__ == "__main__":
    sys.exit(main())
