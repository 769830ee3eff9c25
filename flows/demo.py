"""``etfuse demo``: the system's story so far, on embedded defaults.

1. generate a synthetic world over the test region (skipped when the same world already exists);
2. harmonise every landing file into the harmonised store, then deliver one file again to show
   that the store is idempotent;
3. summarise the store and score the raw sources against the station observations.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from etfuse.grid import IndexMapCache, TargetGrid
from etfuse.harmonise import harmonise_into_store
from etfuse.metrics import all_scores
from etfuse.ongrid import at_cells
from etfuse.settings import Settings
from etfuse.store import HarmonisedStore
from etfuse.synth.world import WorldSpec, generate

#: the order in which landing folders are harmonised (grids, then stations)
SOURCES = ("era5land", "gleam", "modis", "cma", "stations")


def _world(settings: Settings, days: int, echo: Callable[[str], None]) -> Path:
    r = settings.region
    spec = WorldSpec(bbox=r.bbox, start="2021-04-01",
                     end=f"{pd.Timestamp('2021-04-01') + pd.Timedelta(days=days - 1):%Y-%m-%d}",
                     resolution_deg=r.resolution_deg, seed=42, margin_deg=r.margin_deg)
    out = settings.home / "synthetic"
    manifest = out / "manifest.json"
    if manifest.exists():
        old = json.loads(manifest.read_text())["spec"]
        if old["start"] == spec.start and old["end"] == spec.end and tuple(old["bbox"]) == spec.bbox:
            echo(f"[1/3] synthetic world already in {out}")
            return out
    t0 = time.perf_counter()
    generate(out, spec)
    echo(f"[1/3] synthetic world {spec.start}..{spec.end} over {spec.bbox} -> {out} "
         f"({time.perf_counter() - t0:.1f} s)")
    return out


def run_demo(settings: Settings, *, days: int = 120, echo: Callable[[str], None] = print) -> dict:
    settings.ensure_folders()
    world = _world(settings, days, echo)
    store = HarmonisedStore(settings.harmonised)
    t0 = time.perf_counter()
    actions: Counter = Counter()
    files = 0
    for source in SOURCES:
        for path in sorted((world / "landing" / source).glob("*")):
            _, changes = harmonise_into_store(source, path, store, settings=settings)
            actions.update(f"{source}:{c.action}" for c in changes)
            files += 1
    echo(f"[2/3] harmonised {files} files in {time.perf_counter() - t0:.1f} s: "
         + ", ".join(f"{k} {v}" for k, v in sorted(actions.items())))
    again = sorted((world / "landing" / "gleam").glob("*"))[0]
    _, changes = harmonise_into_store("gleam", again, store, settings=settings)
    echo(f"      delivered {again.name} again: {Counter(c.action for c in changes)} (idempotent)")

    echo("[3/3] harmonised store:")
    echo(store.summary().to_string(index=False))
    scores = score_raw_sources(store, settings)
    echo("\nraw sources against CMA station ET (same station-days):")
    echo(scores.to_string(float_format=lambda v: f"{v:.2f}"))
    return {"store": store.summary(), "scores": scores}


def score_raw_sources(store: HarmonisedStore, settings: Settings) -> pd.DataFrame:
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
