"""How good the raw products of a synthetic world are: against its stations and against its truth.

A yardstick for the world itself (is it as hard as the real one?) and the floor any fused product
must beat.  The products are read from ``landing/`` with the project's own readers (what the model
sees), sampled at the truth grid's cells (nearest source cell); the stations are the observations
the CMA reader derives from the pans (``et_obs_mm`` of ``truth/stations_truth.csv``: pan x the
configured coefficient, large pan preferred).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.grid import TargetGrid, nearest_map
from etfuse.metrics import all_scores
from etfuse.settings import load_settings
from etfuse.sources import read_source

SOURCES = ("gleam", "era5land")


def _truth(world: Path) -> xr.DataArray:
    files = sorted((world / "truth").glob("et_truth_*.nc"))
    return xr.open_mfdataset(files, combine="by_coords")["et"].load() if len(files) > 1 else \
        xr.open_dataset(files[0])["et"].load()


def _source_et(world: Path, source: str, settings) -> xr.DataArray:
    paths = sorted((world / "landing" / source).glob("*.nc"))
    return read_source(source, paths, settings=settings)["et"].load()


def _scores(source: str, against: str, obs: np.ndarray, sim: np.ndarray) -> dict:
    s = all_scores(obs, sim)
    ok = np.isfinite(obs) & np.isfinite(sim)
    return {"source": source, "against": against, "n": s["n"], "rmse_mm": s["rmse"],
            "bias_mm": float(np.mean(sim[ok] - obs[ok])) if ok.any() else float("nan"),
            "rb_percent": s["rb_percent"], "cc": s["cc"], "kge": s["kge"]}


def raw_source_skill(world: Path, *, cell_stride: int = 1) -> pd.DataFrame:
    """Scores of raw GLEAM and ERA5-Land ET [mm day-1] per source and reference.

    References: ``stations`` (the pan-derived station ET the reader produces), ``station_cells``
    (the truth at the stations' cells, same station-days) and ``truth`` (every ``cell_stride``-th
    truth cell in both directions, every day).  Returns columns source, against, n, rmse_mm,
    bias_mm (source minus reference), rb_percent, cc, kge.
    """
    world = Path(world)
    manifest = json.loads((world / "manifest.json").read_text())
    w, s, e, n = manifest["spec"]["bbox"]
    res = manifest["spec"]["resolution_deg"]
    grid = TargetGrid(w, e, s, n, res)
    truth = _truth(world)
    stations = pd.read_csv(world / "truth" / "stations_truth.csv", parse_dates=["date"])
    srow, scol = grid.cell_of(stations["lat"].values, stations["lon"].values)
    rows_out = []
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings(home=Path(home), region={"name": "world", "lon_min": w, "lon_max": e, "lat_min": s,
                                                          "lat_max": n, "resolution_deg": res})
        for source in SOURCES:
            field = _source_et(world, source, settings)
            days = pd.DatetimeIndex(field["time"].values)
            shared = days.intersection(pd.DatetimeIndex(truth["time"].values))
            field = field.sel(time=shared)
            index = nearest_map(grid, field["lat"].values, field["lon"].values)
            values = np.asarray(field.values, dtype=np.float32)
            day_of = {d: k for k, d in enumerate(shared)}
            k = stations["date"].map(day_of)
            ok = k.notna().values & (srow >= 0)
            kk = k.values[ok].astype(int)
            sim = values[kk, index.rows[srow[ok]], index.cols[scol[ok]]]
            rows_out.append(_scores(source, "stations", stations["et_obs_mm"].values[ok], sim))
            rows_out.append(_scores(source, "station_cells", stations["et_truth_mm"].values[ok], sim))
            r = np.arange(0, grid.shape[0], cell_stride)
            c = np.arange(0, grid.shape[1], cell_stride)
            sim_grid = values[:, index.rows[r][:, None], index.cols[c][None, :]]
            obs_grid = truth.sel(time=shared).values[:, r][:, :, c]
            rows_out.append(_scores(source, "truth", obs_grid.ravel(), sim_grid.ravel()))
    return pd.DataFrame(rows_out)
