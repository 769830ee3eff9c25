"""Skill of the raw sources against station observations (before any fusion)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from etfuse.grid import IndexMapCache, TargetGrid
from etfuse.metrics import all_scores
from etfuse.ongrid import at_cells
from etfuse.settings import Settings


def score_raw_sources(store, settings: Settings) -> pd.DataFrame:
    """RMSE, MAE, RB, CC, KGE of GLEAM and ERA5-Land ET at station cells, on shared station-days."""
    grid = TargetGrid.from_region(settings.region)
    cache = IndexMapCache(settings.folder("cache") / "index_maps")
    obs = store.read_stations("cma")
    rows, cols = grid.cell_of(obs["lat"].values, obs["lon"].values)
    obs = obs[rows >= 0].assign(row=rows[rows >= 0], col=cols[rows >= 0])
    cells = obs[["row", "col"]].drop_duplicates().reset_index(drop=True)
    cell_index = {(r, c): k for k, (r, c) in enumerate(zip(cells["row"], cells["col"]))}
    paired = {}
    for source in ("gleam", "era5land"):
        field = store.open_grid(source, obs["date"].min(), obs["date"].max(), variables=["et"])["et"].load()
        values = at_cells(field, grid, cache, cells["row"].values, cells["col"].values)
        day_index = {d: k for k, d in enumerate(pd.DatetimeIndex(field["time"].values))}
        k_day = obs["date"].map(day_index)
        ok = k_day.notna().values
        sim = np.full(len(obs), np.nan)
        k_cell = np.array([cell_index[(r, c)] for r, c in zip(obs["row"], obs["col"])])
        sim[ok] = values[k_day[ok].astype(int).values, k_cell[ok]]
        paired[source] = sim
    both = np.isfinite(paired["gleam"]) & np.isfinite(paired["era5land"])
    rows_out = {name: all_scores(obs["et_mm"].values[both], paired[name][both]) for name in ("gleam", "era5land")}
    return pd.DataFrame(rows_out).T
