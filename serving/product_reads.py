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

from serving.cf_product import STATUS_NAMES, DayProvenance, read_provenance
from serving.product_ledger import DayNotFoundError, DayRecord, ProductError, _day

log = logging.getLogger("serving.product")

#: product files kept open by a store for reading (yearly and daily files, least recently used closed)
OPEN_FILES = 64

#: netCDF-C / HDF5 are not thread-safe: one lock for every netCDF call made here.
_NC_LOCK = threading.RLock()


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
