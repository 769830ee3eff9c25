"""Harmonised source fields brought onto the target grid, in memory only.

GLEAM and ERA5-Land go by nearest neighbour, MODIS LST by bilinear weights (design.md §4), through
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


def lst_with_fallback(modis_lst_k: np.ndarray | None, era5_skt_k: np.ndarray | None, *,
                      default_offset_k: float, min_overlap_cells: int) -> LstField:
    """MODIS LST where it exists, else ERA5-Land ``skt`` plus the day's median (LST - skt).

    MODIS daytime LST (about 10:30 local) is warmer than ERA5-Land's daily-mean skin temperature,
    so the fallback is bias-adjusted with the same day's overlap; with fewer than
    ``min_overlap_cells`` overlapping cells (overcast day, or 1990-1999 before MODIS) the
    configured default offset is used.
    """
    if modis_lst_k is None and era5_skt_k is None:
        raise ValueError("neither MODIS LST nor ERA5-Land skt is available for this day")
    if era5_skt_k is None:
        return LstField(modis_lst_k, np.zeros(modis_lst_k.shape, dtype=bool), 0.0)
    if modis_lst_k is None:
        modis_lst_k = np.full(era5_skt_k.shape, np.nan, dtype=np.float32)
    both = np.isfinite(modis_lst_k) & np.isfinite(era5_skt_k)
    offset = float(np.median(modis_lst_k[both] - era5_skt_k[both])) if both.sum() >= min_overlap_cells \
        else float(default_offset_k)
    use_skt = ~np.isfinite(modis_lst_k) & np.isfinite(era5_skt_k)
    lst = np.where(use_skt, era5_skt_k + np.float32(offset), modis_lst_k).astype(np.float32)
    return LstField(lst, use_skt, offset)


def at_cells(field: xr.DataArray, grid: TargetGrid, cache: IndexMapCache, rows: np.ndarray, cols: np.ndarray,
             *, method: str = "nearest") -> np.ndarray:
    """Values of ``field(time, lat, lon)`` at target cells ``(rows, cols)`` -> ``(time, n_cells)``.

    Same result as ``to_target(...)[:, rows, cols]`` without building whole target-grid fields.
    """
    index_map = cache.get(grid, field["lat"].values, field["lon"].values, method)
    if method != "nearest":
        full = index_map.apply(field.values)
        return full[:, rows, cols]
    src_rows, src_cols = index_map.rows[rows], index_map.cols[cols]
    values = np.asarray(field.values)[:, np.clip(src_rows, 0, None), np.clip(src_cols, 0, None)].astype(np.float32)
    values[:, (src_rows < 0) | (src_cols < 0)] = np.nan
    return values
