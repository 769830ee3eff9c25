"""The product store: daily ET NetCDF files, yearly files for users, a ledger and quicklooks.

Layout under ``settings.folder("product")`` (docs/product.md describes the files for users)::

    daily/<YYYY>/etfuse_et_<YYYY-MM-DD>.nc     operational store: one file per day (chunks 1 x 64 x 64)
    etfuse_et_<YYYY>.nc                        yearly file users receive (chunks 4 x 64 x 64), built
                                               from the daily files by build_year()
    quicklooks/<YYYY>/etfuse_et_<YYYY-MM-DD>.png
    ledger.sqlite                              (serving/product_ledger.py) table days (one row per day), history (every
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

import fcntl
import logging
import os
import re
import time
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Literal, Mapping, Sequence

import netCDF4
import numpy as np
import pandas as pd

from etfuse.clock import utcnow
from etfuse.grid import TargetGrid
from etfuse.interval import BOUND_NAMES
from etfuse.settings import Settings
from etfuse.sources.common import file_sha256
from etfuse.tempfiles import temporary_name
from serving import quicklook as ql
from serving.cf_product import (SOURCE_BITS, STATUS_CODES, DayProvenance, global_attributes, iso_utc, read_provenance,
                                write_product_file)
from serving.distribution import publish_day
from etfuse.ledgerdb import create_ledger, schema_name
from serving.product_ledger import (_NAME, _SCHEMA, DayNotFoundError, DayRecord, ProductError, ProductLedger,
                                    ReconcileReport, _day, _sources_text)
from serving.product_reads import _NC_LOCK, ProductReads, file_has_interval

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

_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")



def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)



class ProductStore(ProductReads, ProductLedger):
    """The daily ET product; see the module docstring for layout and guarantees."""

    def __init__(self, settings: Settings, grid: TargetGrid | None = None, *, reconcile: bool = True,
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
        self._interval_cache: dict[tuple[Path, str], bool] = {}            # see has_interval()
        create_ledger(settings.ledger.url, self.root / "ledger.sqlite", schema_name("product", self.root), _SCHEMA)
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
    def _year_lock(self, year: int) -> Iterator[None]:
        folder = self.root / "daily" / f"{int(year):04d}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

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
                  execution_provider: str | None = None,
                  bounds: tuple[np.ndarray, np.ndarray] | None = None) -> Action:
        """Store one product day: ``written`` (new), ``unchanged`` (same key) or ``replaced``.

        ``et_mm`` is the day's total [mm = kg m-2] on the grid (rows north to south), NaN where
        there is no value.  ``quicklook`` (default ``settings.serving.quicklooks``) also draws the
        day's PNG after a write (a failure to draw is logged, not raised: the product is stored).
        ``execution_provider`` (the onnxruntime provider that computed the day, e.g.
        ``CUDAExecutionProvider``) goes into the file's global attribute ``etfuse_execution_provider``,
        its ``history`` and the ledger's history row (``detail``).  ``bounds`` (the calibrated 5 %
        and 95 % bounds [mm] of models with an interval) are written as ``et_q05`` and ``et_q95``.
        """
        day = _day(day)
        arr = self._check_write_args(et_mm, model_version, status, sources_used, fingerprint)
        fields = None
        if bounds is not None:
            fields = {"et": arr[None]}
            for name, values in zip(BOUND_NAMES, bounds):
                b = np.asarray(values, dtype=np.float32).reshape(-1, *self.grid.shape)[-1]
                if b.shape != arr.shape:
                    raise ProductError(f"{name} has shape {b.shape}, expected the grid's {arr.shape}")
                fields[name] = b[None]
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
            sha = self._write_file(path, [prov], lambda t0, t1: arr[None] if fields is None else fields, DAILY_CHUNKS,
                                   ident=f"etfuse_et_{key}", period=key, start=day,
                                   end=day + pd.Timedelta(days=1),
                                   history=(f"{iso_utc(utcnow())} etfuse write_day: model v{prov.model_version}, "
                                            f"{status}, sources {_sources_text(prov.sources_used) or 'none'}{on}"),
                                   extra_attrs={"etfuse_execution_provider": execution_provider}
                                   if execution_provider else None, bounds=fields is not None)
            now = iso_utc(utcnow())
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
                    extra_attrs: dict[str, str] | None = None, bounds: bool = False) -> str:
        """Write-then-rename one product file; returns its SHA-256."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(path)
        now = utcnow()
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
                               lock=_NC_LOCK, bounds=bounds)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            with _NC_LOCK, netCDF4.Dataset(tmp, "r") as nc:      # a file that does not open never replaces one
                if nc.dimensions["time"].size != len(provenance):
                    raise ProductError(f"{tmp}: wrote {nc.dimensions['time'].size} days, expected {len(provenance)}")
            sha = file_sha256(tmp)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        finally:
            if tmp.exists():
                tmp.unlink()
        return sha

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

        with_bounds = any(file_has_interval(p) for p in usable)
        names = ("et",) + (BOUND_NAMES if with_bounds else ())

        def blocks(t0: int, t1: int) -> dict[str, np.ndarray]:
            out = {name: np.full((t1 - t0,) + self.grid.shape, np.nan, dtype=np.float32) for name in names}
            for k in range(t0, t1):
                with _NC_LOCK, netCDF4.Dataset(usable[k], "r") as nc:
                    prov = read_provenance(nc)[0]
                    if prov != provenance[k]:       # replaced since the provenance pass
                        provenance[k] = prov
                    for name in names:
                        if name in nc.variables:     # a day of a model without interval: NaN bounds
                            var = nc[name]
                            var.set_auto_mask(False)  # keeps the fill value as it is: no masked arrays
                            out[name][k - t0] = var[0]
            return out

        first, last = provenance[0].day, provenance[-1].day
        path = self.year_path(year)
        sha = self._write_file(
            path, provenance, blocks, YEARLY_CHUNKS, ident=f"etfuse_et_{year:04d}", period=f"{year:04d}",
            start=first, end=last + pd.Timedelta(days=1),
            history=f"{iso_utc(utcnow())} etfuse build_year: {len(usable)} daily files "
                    f"{first:%Y-%m-%d}..{last:%Y-%m-%d}", bounds=with_bounds)
        # A day replaced after blocks() read it leaves the yearly file with the older version and
        # its provenance: read_point then reads that day from its daily file until the next build.
        seconds = time.perf_counter() - t_begin
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO years VALUES (?,?,?,?,?,?,?)",
                       (year, iso_utc(utcnow()), len(usable), f"{first:%Y-%m-%d}", f"{last:%Y-%m-%d}", sha, seconds))
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
        width_mm = None
        if self.has_interval(record):
            lower, upper = (self.read_field(day, name) for name in BOUND_NAMES)
            width_mm = upper - lower
        sources = ", ".join(sorted(record.sources_used)) or "none"
        valid = np.isfinite(field_mm)
        mean = float(field_mm[valid].mean()) if valid.any() else float("nan")
        return ql.render(
            png, field_mm, self.grid.bbox(), width_mm=width_mm,
            title=f"etfuse daily ET {day:%Y-%m-%d} - {record.status} - model v{record.model_version}",
            subtitle=(f"00-24 UTC total, region mean {mean:.2f} mm, sources: {sources}\n"
                      f"{self.grid.resolution_deg:g} deg grid, {int((~valid).sum())} cells without value"),
            metadata={"Title": f"etfuse ET {day:%Y-%m-%d}", "etfuse_day": f"{day:%Y-%m-%d}",
                      "etfuse_status": record.status, "etfuse_model_version": str(record.model_version),
                      "etfuse_fingerprint": record.fingerprint, "etfuse_file_sha256": record.file_sha256})
