"""The target grid and the index maps that bring source grids onto it.

Every source here lives on a regular latitude/longitude grid, so each map is separable: one index
(or pair of indices and a weight) per target row and one per target column.  Applying a map to a
coarse field is a gather; a 0.01 deg copy of a 0.25 deg field exists only in memory, for as long as
a caller holds it, and never on disk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from etfuse.settings import RegionSettings
from etfuse.tempfiles import temporary_name

#: Cell centres closer than this fraction of a cell to a source cell's edge still count as covered.
_EDGE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class TargetGrid:
    """Regular grid of cell centres; rows run north to south, columns west to east."""

    lon_min: float
    lon_max: float
    lat_min: float
    lat_max: float
    resolution_deg: float

    @classmethod
    def from_region(cls, region: RegionSettings) -> "TargetGrid":
        return cls(region.lon_min, region.lon_max, region.lat_min, region.lat_max, region.resolution_deg)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) = (n_lat, n_lon)."""
        return (round((self.lat_max - self.lat_min) / self.resolution_deg),
                round((self.lon_max - self.lon_min) / self.resolution_deg))

    @property
    def lat(self) -> np.ndarray:
        """Cell-centre latitudes [degrees north], descending."""
        n = self.shape[0]
        return (self.lat_max - (np.arange(n) + 0.5) * self.resolution_deg).astype(np.float64)

    @property
    def lon(self) -> np.ndarray:
        """Cell-centre longitudes [degrees east], ascending."""
        n = self.shape[1]
        return (self.lon_min + (np.arange(n) + 0.5) * self.resolution_deg).astype(np.float64)

    def bbox(self, margin_deg: float = 0.0) -> tuple[float, float, float, float]:
        """(west, south, east, north) edges [degrees], widened by ``margin_deg``."""
        return (self.lon_min - margin_deg, self.lat_min - margin_deg,
                self.lon_max + margin_deg, self.lat_max + margin_deg)

    def cell_of(self, lat: np.ndarray | float, lon: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of the cells holding points; -1 where a point is outside the grid."""
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        rows = np.floor((self.lat_max - lat) / self.resolution_deg).astype(np.int64)
        cols = np.floor((lon - self.lon_min) / self.resolution_deg).astype(np.int64)
        inside = (rows >= 0) & (rows < self.shape[0]) & (cols >= 0) & (cols < self.shape[1])
        return np.where(inside, rows, -1), np.where(inside, cols, -1)

    def key(self) -> str:
        return f"{self.lon_min:g}_{self.lat_min:g}_{self.lon_max:g}_{self.lat_max:g}_{self.resolution_deg:g}"


def _regular_axis(coord: np.ndarray, name: str) -> tuple[float, float]:
    """First centre and signed step of a regular 1-D axis; raises if it is not regular."""
    coord = np.asarray(coord, dtype=np.float64)
    if coord.ndim != 1 or coord.size < 1:
        raise ValueError(f"source {name} must be a 1-D coordinate with at least one value, got shape {coord.shape}")
    if coord.size == 1:
        raise ValueError(f"source {name} has a single value; cannot infer its cell size")
    steps = np.diff(coord)
    step = float(np.median(steps))
    if step == 0 or np.max(np.abs(steps - step)) > 1e-4 * abs(step):
        raise ValueError(f"source {name} is not a regular axis (steps from {steps.min():g} to {steps.max():g})")
    return float(coord[0]), step


def _nearest_axis(target: np.ndarray, source: np.ndarray, name: str) -> np.ndarray:
    """Index of the source cell holding each target centre along one axis; -1 if outside."""
    first, step = _regular_axis(source, name)
    pos = (target - first) / step
    idx = np.floor(pos + 0.5).astype(np.int64)
    # A centre exactly on a source edge belongs to the lower-index cell, consistently.
    inside = (pos >= -0.5 - _EDGE_TOLERANCE) & (pos <= source.size - 0.5 + _EDGE_TOLERANCE)
    idx = np.clip(idx, 0, source.size - 1)
    return np.where(inside, idx, -1)


def _bilinear_axis(target: np.ndarray, source: np.ndarray, name: str):
    """Lower index, upper index and weight of the upper one per target centre (-1 if outside)."""
    first, step = _regular_axis(source, name)
    pos = (target - first) / step
    inside = (pos >= -_EDGE_TOLERANCE) & (pos <= source.size - 1 + _EDGE_TOLERANCE)
    pos = np.clip(pos, 0, source.size - 1)
    lo = np.floor(pos).astype(np.int64)
    lo = np.minimum(lo, source.size - 2)
    w = (pos - lo).astype(np.float64)
    return np.where(inside, lo, -1), np.where(inside, lo + 1, -1), w


@dataclass(frozen=True)
class NearestMap:
    """Nearest-neighbour map: target row i takes source row ``rows[i]``, column j ``cols[j]``."""

    rows: np.ndarray
    cols: np.ndarray

    def apply(self, field: np.ndarray) -> np.ndarray:
        """Gather ``field[..., src_lat, src_lon]`` onto the target grid; NaN outside coverage."""
        field = np.asarray(field)
        out = field[..., np.clip(self.rows, 0, None)[:, None], np.clip(self.cols, 0, None)[None, :]]
        out = out.astype(np.float32, copy=False)
        outside = (self.rows < 0)[:, None] | (self.cols < 0)[None, :]
        if outside.any():
            out = np.where(outside, np.float32(np.nan), out)
        return out


@dataclass(frozen=True)
class BilinearMap:
    """Bilinear weights; corners without data are dropped and the others renormalised."""

    row_lo: np.ndarray
    row_hi: np.ndarray
    row_w: np.ndarray
    col_lo: np.ndarray
    col_hi: np.ndarray
    col_w: np.ndarray

    def apply(self, field: np.ndarray) -> np.ndarray:
        field = np.asarray(field, dtype=np.float32)
        r0, r1 = np.clip(self.row_lo, 0, None), np.clip(self.row_hi, 0, None)
        c0, c1 = np.clip(self.col_lo, 0, None), np.clip(self.col_hi, 0, None)
        wr = self.row_w.astype(np.float32)[:, None]
        wc = self.col_w.astype(np.float32)[None, :]
        total = np.zeros(field.shape[:-2] + (r0.size, c0.size), dtype=np.float32)
        weight = np.zeros_like(total)
        for rows, w_r in ((r0, 1 - wr), (r1, wr)):
            for cols, w_c in ((c0, 1 - wc), (c1, wc)):
                corner = field[..., rows[:, None], cols[None, :]]
                w = np.broadcast_to(w_r * w_c, corner.shape)
                ok = np.isfinite(corner)
                total += np.where(ok, corner * w, 0)
                weight += np.where(ok, w, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(weight > 1e-6, total / weight, np.float32(np.nan))
        outside = (self.row_lo < 0)[:, None] | (self.col_lo < 0)[None, :]
        return np.where(outside, np.float32(np.nan), out).astype(np.float32)


def nearest_map(grid: TargetGrid, src_lat: np.ndarray, src_lon: np.ndarray) -> NearestMap:
    return NearestMap(_nearest_axis(grid.lat, np.asarray(src_lat), "latitude"),
                      _nearest_axis(grid.lon, np.asarray(src_lon), "longitude"))


def bilinear_map(grid: TargetGrid, src_lat: np.ndarray, src_lon: np.ndarray) -> BilinearMap:
    r0, r1, wr = _bilinear_axis(grid.lat, np.asarray(src_lat), "latitude")
    c0, c1, wc = _bilinear_axis(grid.lon, np.asarray(src_lon), "longitude")
    return BilinearMap(r0, r1, wr, c0, c1, wc)


class IndexMapCache:
    """Index maps computed once per (target grid, source grid, method), in memory and on disk.

    The disk copy (``$ETFUSE_HOME/cache/index_maps``) lets every worker process of a backfill reuse
    maps instead of recomputing them; the key hashes the source coordinates themselves, so a
    provider changing its grid gets a new map, never a stale one.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._memory: dict[str, NearestMap | BilinearMap] = {}

    @staticmethod
    def _key(grid: TargetGrid, src_lat: np.ndarray, src_lon: np.ndarray, method: str) -> str:
        h = hashlib.sha256()
        h.update(grid.key().encode())
        h.update(method.encode())
        h.update(np.ascontiguousarray(src_lat, dtype=np.float64).tobytes())
        h.update(b"|")
        h.update(np.ascontiguousarray(src_lon, dtype=np.float64).tobytes())
        return f"{method}-{h.hexdigest()[:24]}"

    def get(self, grid: TargetGrid, src_lat: np.ndarray, src_lon: np.ndarray,
            method: str = "nearest") -> NearestMap | BilinearMap:
        builders = {"nearest": (nearest_map, NearestMap), "bilinear": (bilinear_map, BilinearMap)}
        if method not in builders:
            raise ValueError(f"unknown resampling method {method!r}; expected one of {sorted(builders)}")
        build, kind = builders[method]
        key = self._key(grid, src_lat, src_lon, method)
        if key in self._memory:
            return self._memory[key]
        path = self.folder / f"{key}.npz" if self.folder else None
        if path is not None and path.exists():
            with np.load(path) as data:
                result = kind(**{name: data[name] for name in data.files})
        else:
            result = build(grid, src_lat, src_lon)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = temporary_name(path)
                with open(tmp, "wb") as handle:       # a handle: np.savez would append .npz to a name
                    np.savez(handle, **result.__dict__)
                tmp.replace(path)
        self._memory[key] = result
        return result
