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
from typing import Iterator

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.grid import TargetGrid, nearest_map
from etfuse.metrics import all_scores
from etfuse.settings import Settings, load_settings
from etfuse.sources import read_source

SOURCES = ("gleam", "era5land")


def _truth(world: Path) -> xr.DataArray:
    parts = []
    for path in sorted((world / "truth").glob("et_truth_*.nc")):
        with xr.open_dataset(path) as ds:
            parts.append(ds["et"].load())
    return xr.concat(parts, dim="time")


def _source_chunks(world: Path, source: str, settings: Settings) -> Iterator[xr.DataArray]:
    """Daily ET of a source, one file's days at a time (bounded memory on a 2-year province world).

    ERA5-Land's last day of a month is completed by the next file's first 00 UTC step, so each
    monthly file is read together with the next one and only its own month is kept.
    """
    paths = sorted((world / "landing" / source).glob("*.nc"))
    for k, path in enumerate(paths):
        if source == "era5land":
            et = read_source(source, paths[k:k + 2], settings=settings)["et"]
            month = pd.Timestamp(path.stem.split("_")[-1] + "01")
            days = pd.DatetimeIndex(et["time"].values)
            yield et.sel(time=days[(days.year == month.year) & (days.month == month.month)]).load()
        else:
            yield read_source(source, [path], settings=settings)["et"].load()


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
    truth_days = pd.DatetimeIndex(truth["time"].values)
    r, c = np.arange(0, grid.shape[0], cell_stride), np.arange(0, grid.shape[1], cell_stride)
    rows_out = []
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings(home=Path(home), region={"name": "world", "lon_min": w, "lon_max": e, "lat_min": s,
                                                          "lat_max": n, "resolution_deg": res})
        for source in SOURCES:
            pairs: dict[str, tuple[list, list]] = {k: ([], []) for k in ("stations", "station_cells", "truth")}
            for field in _source_chunks(world, source, settings):
                shared = pd.DatetimeIndex(field["time"].values).intersection(truth_days)
                if shared.empty:
                    continue
                field = field.sel(time=shared)
                index = nearest_map(grid, field["lat"].values, field["lon"].values)
                values = np.asarray(field.values, dtype=np.float32)
                k = stations["date"].map({d: i for i, d in enumerate(shared)})
                ok = k.notna().values & (srow >= 0)
                sim = values[k.values[ok].astype(int), index.rows[srow[ok]], index.cols[scol[ok]]]
                for name, column in (("stations", "et_obs_mm"), ("station_cells", "et_truth_mm")):
                    pairs[name][0].append(stations[column].values[ok])
                    pairs[name][1].append(sim)
                pairs["truth"][0].append(truth.sel(time=shared).values[:, r][:, :, c].ravel())
                pairs["truth"][1].append(values[:, index.rows[r][:, None], index.cols[c][None, :]].ravel())
            for name, (obs, sim) in pairs.items():
                rows_out.append(_scores(source, name, np.concatenate(obs), np.concatenate(sim)))
    return pd.DataFrame(rows_out)
