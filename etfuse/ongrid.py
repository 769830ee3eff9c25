"""Harmonised source fields brought onto the target grid, in memory only.

GLEAM and ERA5-Land go by nearest neighbour, MODIS LST by bilinear weights (docs/model-card.md), through
cached separable index maps; nothing at 0.01 deg is written to disk here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from etfuse.grid import IndexMapCache, TargetGrid

#: resampling per (source, variable); anything else by nearest neighbour
RESAMPLING = {("modis", "lst"): "bilinear"}


def to_target(field: xr.DataArray, grid: TargetGrid, cache: IndexMapCache, *, method: str = "nearest") -> np.ndarray:
    """``field(..., lat, lon)`` on a regular source grid -> ``(..., rows, cols)`` on the target grid."""
    index_map = cache.get(grid, field["lat"].values, field["lon"].values, method)
    return index_map.apply(field.values)


def method_for(source: str, variable: str) -> str:
    return RESAMPLING.get((source, variable), "nearest")


@dataclass(frozen=True)
class LstField:
    """LST on the target grid and where it came from."""

    lst_k: np.ndarray
    #: True where ERA5-Land skin temperature (offset-adjusted) stands in for missing MODIS LST
    from_skt: np.ndarray
    #: the offset added to skt that day [K]
    offset_k: float


def skt_offset_k(modis_lst_k: np.ndarray | None, era5_skt_k: np.ndarray | None, *, default_offset_k: float,
                 min_overlap_cells: int) -> float:
    """The day's median (MODIS LST - ERA5-Land skt) [K] where both exist.

    MODIS daytime LST (about 10:30 local) is warmer than ERA5-Land's daily-mean skin temperature;
    with fewer than ``min_overlap_cells`` overlapping cells (overcast day, or 1990-1999 before
    MODIS) the configured default is returned.
    """
    if modis_lst_k is None or era5_skt_k is None:
        return float(default_offset_k)
    both = np.isfinite(modis_lst_k) & np.isfinite(era5_skt_k)
    if both.sum() < min_overlap_cells:
        return float(default_offset_k)
    return float(np.median(modis_lst_k[both] - era5_skt_k[both]))


def lst_with_fallback(modis_lst_k: np.ndarray | None, era5_skt_k: np.ndarray | None, *,
                      offset_k: float) -> LstField:
    """MODIS LST where it exists, else ERA5-Land ``skt + offset_k``, flagged in ``from_skt``."""
    if modis_lst_k is None and era5_skt_k is None:
        raise ValueError("neither MODIS LST nor ERA5-Land skt is available for this day")
    if era5_skt_k is None:
        return LstField(np.asarray(modis_lst_k, dtype=np.float32), np.zeros(np.shape(modis_lst_k), dtype=bool), 0.0)
    if modis_lst_k is None:
        modis_lst_k = np.full(np.shape(era5_skt_k), np.nan, dtype=np.float32)
    use_skt = ~np.isfinite(modis_lst_k) & np.isfinite(era5_skt_k)
    lst = np.where(use_skt, era5_skt_k + np.float32(offset_k), modis_lst_k).astype(np.float32)
    return LstField(lst, use_skt, float(offset_k))


def at_cells(field: xr.DataArray, grid: TargetGrid, cache: IndexMapCache, rows: np.ndarray, cols: np.ndarray,
             *, method: str = "nearest") -> np.ndarray:
    """Values of ``field(time, lat, lon)`` (or ``(lat, lon)``) at target cells -> ``(time, n_cells)``.

    Same result as ``to_target(...)[:, rows, cols]`` without building whole target-grid fields.
    """
    index_map = cache.get(grid, field["lat"].values, field["lon"].values, method)
    values = np.asarray(field.values, dtype=np.float32)
    if values.ndim == 2:
        values = values[None]
    rows, cols = np.asarray(rows), np.asarray(cols)
    if method == "nearest":
        src_r, src_c = index_map.rows[rows], index_map.cols[cols]
        out = values[:, np.clip(src_r, 0, None), np.clip(src_c, 0, None)]
        out[:, (src_r < 0) | (src_c < 0)] = np.nan
        return out
    total = np.zeros((values.shape[0], rows.size), dtype=np.float32)
    weight = np.zeros_like(total)
    wr, wc = index_map.row_w[rows].astype(np.float32), index_map.col_w[cols].astype(np.float32)
    for r_idx, w_r in ((index_map.row_lo[rows], 1 - wr), (index_map.row_hi[rows], wr)):
        for c_idx, w_c in ((index_map.col_lo[cols], 1 - wc), (index_map.col_hi[cols], wc)):
            corner = values[:, np.clip(r_idx, 0, None), np.clip(c_idx, 0, None)]
            ok = np.isfinite(corner)
            w = np.broadcast_to(w_r * w_c, corner.shape)
            total += np.where(ok, corner * w, 0)
            weight += np.where(ok, w, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(weight > 1e-6, total / weight, np.float32(np.nan)).astype(np.float32)
    out[:, (index_map.row_lo[rows] < 0) | (index_map.col_lo[cols] < 0)] = np.nan
    return out
