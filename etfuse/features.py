"""Model inputs on the target grid: the same features for training (at station patches) and
serving (whole tiles), built from the harmonised store.

Features per cell and day, in physical units, NaN where the source is missing (the model's own
input encoder turns NaN into zero plus a mask, so availability is always explicit):

=================  ==========================================================================
``gleam_et``       GLEAM ET [mm day-1], nearest neighbour
``era5land_et``    ERA5-Land ET [mm day-1], nearest neighbour
``net_radiation``  ERA5-Land net radiation [MJ m-2 day-1], nearest neighbour
``lst``            MODIS LST [K], bilinear; where missing ERA5-Land ``skt`` plus the day's offset
``lst_from_skt``   1 where ``lst`` came from ``skt``, 0 where from MODIS [unitless]
``elevation``      DEM [m] (``static.elevation_file``), nearest neighbour
``lat``, ``lon``   cell centre [degrees]
``doy_sin/cos``    season: sin and cos of 2 pi day-of-year / 365.25 [unitless]
=================  ==========================================================================
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.grid import IndexMapCache, TargetGrid
from etfuse.ongrid import at_cells, lst_with_fallback, method_for, skt_offset_k, to_target
from etfuse.settings import Settings
from etfuse.store import HarmonisedStore

FEATURES: tuple[str, ...] = ("gleam_et", "era5land_et", "net_radiation", "lst", "lst_from_skt", "elevation",
                             "lat", "lon", "doy_sin", "doy_cos")
FEATURE_UNITS = {"gleam_et": "mm day-1", "era5land_et": "mm day-1", "net_radiation": "MJ m-2 day-1", "lst": "K",
                 "lst_from_skt": "1", "elevation": "m", "lat": "degrees_north", "lon": "degrees_east",
                 "doy_sin": "1", "doy_cos": "1"}
#: (store source, variable) behind each raw input
RAW_INPUTS: dict[str, tuple[str, str]] = {
    "gleam_et": ("gleam", "et"),
    "era5land_et": ("era5land", "et"),
    "net_radiation": ("era5land", "net_radiation"),
    "skt": ("era5land", "skt"),
    "lst_modis": ("modis", "lst"),
}
#: sources whose absence a sample can be trained to survive (random source dropout)
DROPPABLE = ("gleam", "modis", "era5land")


@dataclass
class RawInputs:
    """Raw inputs for ``days`` at some cells: each array is ``(days, *cells_shape)``."""

    days: pd.DatetimeIndex
    values: dict[str, np.ndarray]
    #: the day's LST - skt offset [K] used where MODIS is missing
    lst_offset_k: np.ndarray
    #: per day, the sources that had data
    sources_present: list[set[str]] = field(default_factory=list)


def elevation_on_grid(settings: Settings, grid: TargetGrid, cache: IndexMapCache) -> np.ndarray | None:
    """The DEM nearest-resampled onto the target grid [m]; None when no DEM is configured."""
    path = settings.static.elevation_file
    if path is None:
        return None
    return _elevation(Path(path), grid, cache)


@lru_cache(maxsize=4)
def _elevation(path: Path, grid: TargetGrid, cache: IndexMapCache) -> np.ndarray:
    from etfuse.errors import SourceFormatError
    from etfuse.sources.common import standard_latlon
    with xr.open_dataset(path) as ds:
        if "elevation" not in ds:
            raise SourceFormatError(path, "no DEM variable", variable="elevation", expected="'elevation' [m]",
                                    found=sorted(map(str, ds.data_vars)))
        if ds["elevation"].attrs.get("units", "m") != "m":
            raise SourceFormatError(path, "unexpected units", variable="elevation", expected="'m'",
                                    found=ds["elevation"].attrs.get("units"))
        dem = standard_latlon(ds[["elevation"]], path)["elevation"].load()
    return cache.get(grid, dem["lat"].values, dem["lon"].values, "nearest").apply(dem.values)


class InputReader:
    """Reads the raw inputs of given days from the harmonised store onto target cells."""

    def __init__(self, store: HarmonisedStore, settings: Settings, grid: TargetGrid | None = None,
                 cache: IndexMapCache | None = None) -> None:
        self.store = store
        self.settings = settings
        self.grid = grid or TargetGrid.from_region(settings.region)
        self.cache = cache or IndexMapCache(settings.folder("cache") / "index_maps")
        self._offsets: dict[pd.Timestamp, float] = {}
        self._days: dict[tuple[str, pd.Timestamp], xr.Dataset | None] = {}
        self._hashes: dict[str, set[str]] = {}

    def _field(self, source: str, variable: str, day: pd.Timestamp) -> xr.DataArray | None:
        key = (source, pd.Timestamp(day))
        if key not in self._days:
            if len(self._days) > 16:                       # keep only the last few days in memory
                self._days.pop(next(iter(self._days)))
            self._days[key] = self.store.read_grid_day(source, day)
        ds = self._days[key]
        if ds is None or variable not in ds:
            return None
        self._hashes.setdefault(source, set()).add(f"{key[1]:%Y-%m-%d}:{variable}:{ds[variable].attrs.get('sha256', '')}")
        return ds[variable]

    def fingerprints(self) -> dict[str, str]:
        """Per source, a sha256 over the content hashes of every stored day and variable read so far."""
        return {source: hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()
                for source, items in sorted(self._hashes.items())}

    def lst_offset(self, day: pd.Timestamp) -> float:
        """The day's median (MODIS LST - ERA5-Land skt) over the region, on a ~0.04 deg lattice."""
        day = pd.Timestamp(day)
        if day not in self._offsets:
            stride = max(1, int(round(0.04 / self.grid.resolution_deg)))
            rows = np.arange(0, self.grid.shape[0], stride)
            cols = np.arange(0, self.grid.shape[1], stride)
            rr, cc = np.meshgrid(rows, cols, indexing="ij")
            lst = self._at(("modis", "lst"), day, rr.ravel(), cc.ravel())
            skt = self._at(("era5land", "skt"), day, rr.ravel(), cc.ravel())
            self._offsets[day] = skt_offset_k(lst, skt, default_offset_k=self.settings.lst.fallback_default_offset_k,
                                              min_overlap_cells=self.settings.lst.min_overlap_cells)
        return self._offsets[day]

    def _at(self, key: tuple[str, str], day: pd.Timestamp, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
        source, variable = key
        da = self._field(source, variable, day)
        if da is None:
            return None
        return at_cells(da, self.grid, self.cache, rows, cols, method=method_for(source, variable))[0]

    def at_cells(self, days: pd.DatetimeIndex, rows: np.ndarray, cols: np.ndarray) -> RawInputs:
        """Raw inputs at target cells ``(rows, cols)`` (any shape) for each day; NaN outside the grid."""
        rows = np.asarray(rows)
        cols = np.asarray(cols)
        shape = rows.shape
        flat_r, flat_c = rows.ravel(), cols.ravel()
        inside = (flat_r >= 0) & (flat_c >= 0) & (flat_r < self.grid.shape[0]) & (flat_c < self.grid.shape[1])
        r, c = np.where(inside, flat_r, 0), np.where(inside, flat_c, 0)
        values = {name: np.full((len(days), flat_r.size), np.nan, dtype=np.float32) for name in RAW_INPUTS}
        offsets = np.zeros(len(days), dtype=np.float32)
        present: list[set[str]] = []
        for k, day in enumerate(pd.DatetimeIndex(days)):
            here: set[str] = set()
            for name, key in RAW_INPUTS.items():
                got = self._at(key, day, r, c)
                if got is not None:
                    values[name][k] = np.where(inside, got, np.nan)
                    here.add(key[0])
            offsets[k] = self.lst_offset(day)
            present.append(here)
        return RawInputs(pd.DatetimeIndex(days), {n: v.reshape((len(days),) + shape) for n, v in values.items()},
                         offsets, present)


def grid_day(reader: InputReader, day: pd.Timestamp, elevation: np.ndarray | None) -> tuple[np.ndarray, set[str]]:
    """The features of one day on the whole target grid ``(rows, cols, F)`` and the sources present."""
    grid = reader.grid
    day = pd.Timestamp(day)
    values = {}
    present: set[str] = set()
    for name, (source, variable) in RAW_INPUTS.items():
        da = reader._field(source, variable, day)
        if da is None:
            values[name] = np.full((1,) + grid.shape, np.nan, dtype=np.float32)
        else:
            values[name] = to_target(da, grid, reader.cache, method=method_for(source, variable)).reshape((1,) + grid.shape)
            present.add(source)
    raw = RawInputs(pd.DatetimeIndex([day]), values, np.array([reader.lst_offset(day)], dtype=np.float32), [present])
    lat, lon = _grid_coordinates(grid)
    return assemble(raw, lat=lat, lon=lon, elevation=elevation)[0], present


@lru_cache(maxsize=4)
def _grid_coordinates(grid: TargetGrid) -> tuple[np.ndarray, np.ndarray]:
    lat, lon = np.meshgrid(grid.lat.astype(np.float32), grid.lon.astype(np.float32), indexing="ij")
    return lat, lon


def assemble(raw: RawInputs, *, lat: np.ndarray, lon: np.ndarray, elevation: np.ndarray | None,
             drop: frozenset[str] = frozenset()) -> np.ndarray:
    """Stack the features of ``FEATURES`` -> ``(days, *cells_shape, len(FEATURES))`` float32.

    ``lat``, ``lon``, ``elevation`` have the cells' shape.  ``drop`` names sources to treat as
    absent (training's random source dropout): a dropped MODIS falls back to ``skt`` exactly as a
    cloudy day does in operations.
    """
    n_days = len(raw.days)
    cells_shape = np.shape(lat)
    v = raw.values
    nan = np.full((n_days,) + cells_shape, np.nan, dtype=np.float32)
    gleam = nan if "gleam" in drop else v["gleam_et"]
    era5 = nan if "era5land" in drop else v["era5land_et"]
    rn = nan if "era5land" in drop else v["net_radiation"]
    skt = nan if "era5land" in drop else v["skt"]
    modis = nan if "modis" in drop else v["lst_modis"]
    lst, from_skt = np.empty_like(nan), np.empty_like(nan)
    for k in range(n_days):
        f = lst_with_fallback(modis[k], skt[k], offset_k=float(raw.lst_offset_k[k]))
        lst[k] = f.lst_k
        from_skt[k] = np.where(np.isfinite(f.lst_k), f.from_skt.astype(np.float32), np.nan)
    doy = raw.days.day_of_year.to_numpy(dtype=np.float32)
    angle = 2 * np.pi * doy / 365.25
    shape = (n_days,) + cells_shape
    static = {
        "elevation": np.broadcast_to(elevation if elevation is not None else np.float32(np.nan), shape),
        "lat": np.broadcast_to(lat, shape), "lon": np.broadcast_to(lon, shape),
        "doy_sin": np.broadcast_to(np.sin(angle).reshape((-1,) + (1,) * len(cells_shape)), shape),
        "doy_cos": np.broadcast_to(np.cos(angle).reshape((-1,) + (1,) * len(cells_shape)), shape),
    }
    columns = {"gleam_et": gleam, "era5land_et": era5, "net_radiation": rn, "lst": lst, "lst_from_skt": from_skt,
               **static}
    return np.stack([np.asarray(columns[name], dtype=np.float32) for name in FEATURES], axis=-1)
