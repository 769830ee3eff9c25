"""Reading the product: a day, a point's series, an area, a whole field.

ProductReads is a mixin of serving.product.ProductStore.  A point's series comes from the yearly
file for every day whose provenance there equals the ledger's, and from the daily file for the
others (days written since the last build_year), so it is always current.  Open files are kept
(opening a yearly HDF5 file costs 15-30 ms, a point's year from an open file about 1 ms) and
checked by (inode, size, mtime) before every use: a replaced file is a new inode.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import xarray as xr

from etfuse.interval import BOUND_NAMES
from serving.cf_product import STATUS_NAMES, DayProvenance, read_provenance
from serving.product_ledger import DayNotFoundError, DayRecord, ProductError, _day

log = logging.getLogger("serving.product")

#: product files kept open by a store for reading (yearly and daily files, least recently used closed)
OPEN_FILES = 64

#: netCDF-C / HDF5 are not thread-safe: one lock for every netCDF call made here.
_NC_LOCK = threading.RLock()

#: the per-cell 90 % interval [mm day-1] of days written by models that estimate it (same dims as
#: ``et``, named in its ``ancillary_variables``); days of older models have no such variables
INTERVAL_VARIABLES = BOUND_NAMES
#: variables a reader may ask for by name
FIELD_VARIABLES = ("et",) + INTERVAL_VARIABLES


class VariableNotFoundError(DayNotFoundError):
    """The day exists but its file lacks the variable (e.g. no interval from an older model)."""


def _has_interval(nc: netCDF4.Dataset) -> bool:
    return all(name in nc.variables for name in INTERVAL_VARIABLES)


def file_has_interval(path: Path) -> bool:
    """Whether the product file at ``path`` holds ``et_q05`` and ``et_q95``."""
    with _NC_LOCK, netCDF4.Dataset(path, "r") as nc:
        return _has_interval(nc)


class ProductReads:
    """Mixin of ProductStore: read days, points, areas and fields."""

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

    def close_files(self) -> None:
        """Close every product file kept open for reading (they reopen on the next read)."""
        with _NC_LOCK:
            while self._handles:
                self._handles.popitem(last=False)[1][1].close()

    @staticmethod
    def _same(record: DayRecord, prov: DayProvenance) -> bool:
        return (record.fingerprint, record.model_version, record.status, record.sources_used) == \
               (prov.fingerprint, prov.model_version, prov.status, prov.sources_used)

    def has_interval(self, record: DayRecord) -> bool:
        """Whether the day version ``record`` holds ``et_q05`` and ``et_q95`` (one open per version, then cached)."""
        key = (record.path, record.file_sha256)
        known = self._interval_cache.get(key)
        if known is None:
            try:
                known = file_has_interval(record.path)
            except FileNotFoundError:
                return False                       # being replaced: the next request knows
            self._interval_cache[key] = known
        return known

    def _point_interval(self, records: list[DayRecord], row: int, col: int,
                        out: dict[pd.Timestamp, tuple]) -> None:
        """Add (q05, q95) [mm] to each day of ``out`` whose interval was not read with its value."""
        for r in records:
            if r.day not in out or len(out[r.day]) == 5:
                continue
            q05 = q95 = np.nan
            if self.has_interval(r):
                try:
                    with _NC_LOCK:
                        nc = self._handle(r.path)
                        q05, q95 = (float(np.ma.filled(nc[v][0, row, col], np.nan)) for v in INTERVAL_VARIABLES)
                except FileNotFoundError:
                    pass
            out[r.day] = out[r.day] + (q05, q95)

    def read_point(self, lat: float, lon: float, start=None, end=None) -> pd.DataFrame:
        """Daily ET of the cell holding (lat, lon): columns date, et_mm, status, model_version,
        et_q05_mm, et_q95_mm (the 90 % interval [mm], NaN on days whose model gave none).

        Days without a product are absent (not NaN rows).  ``frame.attrs`` holds the cell's
        centre (``cell_lat``, ``cell_lon``) and how many days came from yearly / daily files.
        The interval comes from the yearly file when it holds the interval variables, else from
        the day's file.
        """
        row, col = self._cell(lat, lon)
        records = self.records(start, end)
        out: dict[pd.Timestamp, tuple] = {}
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
                        names = ("et",) + (INTERVAL_VARIABLES if _has_interval(nc) else ())
                        series = [np.ma.filled(nc[v][ks[0]:ks[-1] + 1, row, col].astype(np.float64), np.nan)
                                  for v in names]
                    for r in recs:
                        if r.day in use:
                            k = use[r.day] - ks[0]
                            out[r.day] = (float(series[0][k]), r.status, r.model_version) + \
                                tuple(float(values[k]) for values in series[1:])
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
                        band = tuple(float(np.ma.filled(nc[v][0, row, col], np.nan)) for v in INTERVAL_VARIABLES) \
                            if _has_interval(nc) else (np.nan, np.nan)
                except FileNotFoundError:
                    continue                      # removed since the ledger was read
                out[r.day] = (value, status, model_version) + band
            self._point_interval(recs, row, col, out)
        days = sorted(out)
        frame = pd.DataFrame({"date": pd.DatetimeIndex(days),
                              "et_mm": np.array([out[d][0] for d in days], dtype=np.float64),
                              "status": [out[d][1] for d in days],
                              "model_version": np.array([out[d][2] for d in days], dtype=np.int64),
                              "et_q05_mm": np.array([out[d][3] for d in days], dtype=np.float64),
                              "et_q95_mm": np.array([out[d][4] for d in days], dtype=np.float64)})
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

    def _read_window(self, day, variable: str, rows: slice, cols: slice) -> np.ndarray:
        if variable not in FIELD_VARIABLES:
            raise ProductError(f"no product variable {variable!r}; expected one of {', '.join(FIELD_VARIABLES)}")
        path = self.day_path(day)
        try:
            with _NC_LOCK:
                nc = self._handle(path)
                if variable not in nc.variables:
                    raise VariableNotFoundError(
                        f"{path.name} has no variable {variable!r} (days written by a model without "
                        f"intervals have only 'et')")
                values = nc[variable][0, rows, cols]
        except FileNotFoundError:
            raise DayNotFoundError(f"no product for {_day(day):%Y-%m-%d}") from None
        return np.ma.filled(values.astype(np.float32), np.nan)

    def read_area(self, bbox: tuple[float, float, float, float], day, variable: str = "et") -> np.ndarray:
        """``variable`` [mm] (``et``, ``et_q05``, ``et_q95``) of the cells inside ``bbox`` on ``day``
        (rows north to south), NaN where missing; VariableNotFoundError when the day lacks it."""
        rows, cols = self.area_window(bbox)
        return self._read_window(day, variable, rows, cols)

    def read_field(self, day, variable: str = "et") -> np.ndarray:
        """The whole day's ``variable`` [mm] (rows north to south), NaN where missing."""
        return self._read_window(day, variable, slice(None), slice(None))
