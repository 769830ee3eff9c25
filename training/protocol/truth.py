"""Skill against the gridded truth of a synthetic world, where the product's main claim lives:
away from stations.

On a block of days, every model predicts the whole target grid: the per-cell baselines from the
same per-cell features (plus lags) at each cell, the GCN-GRU through its gridded form
(training/export.GridGcnGru, the weights that are exported and served).  Then:

* ``rmse_map``: per-cell RMSE against the truth over the days [mm day-1];
* ``away``: RMSE over cells at least ``evaluation.away_km`` from every training station, and ``near``
  over the others;
* ``seam``: mean |difference| between neighbouring cells that straddle an edge of the 0.1 deg
  (ERA5-Land) or 0.25 deg (GLEAM) source grid, minus the same over neighbours inside one source
  cell [mm day-1].  The truth has its own value (~0: no seams); a model that copies a coarse
  source's blocks scores well above the truth's.  (A difference, not a ratio: a model constant
  inside source cells has zero inside differences.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from etfuse.features import FEATURES, InputReader, elevation_on_grid, grid_day
from etfuse.grid import TargetGrid
from etfuse.settings import Settings
from training.protocol.folds import KM_PER_DEG
from training.protocol.frame import cell_frame
from training.samples import SampleSet

#: source grids whose cell edges a seam would follow: name -> (resolution [deg], centre offset [deg])
SOURCE_GRIDS = {"era5land_0.1deg": (0.1, 0.0), "gleam_0.25deg": (0.25, 0.125)}


@dataclass
class TruthScores:
    table: pd.DataFrame               # model, rmse_all, rmse_away, rmse_near, seam_<grid>, cells_away, days
    maps: dict[str, np.ndarray]       # model -> (H, W) RMSE
    truth_seams: dict[str, float]


def read_truth(folder: Path, days: pd.DatetimeIndex, grid: TargetGrid) -> np.ndarray:
    """The truth ET ``(days, H, W)`` [mm day-1] on the target grid (nearest cell centre)."""
    out = np.full((len(days),) + grid.shape, np.nan, np.float32)
    for year in sorted(set(days.year)):
        path = folder / f"et_truth_{year}.nc"
        if not path.exists():
            continue
        with xr.open_dataset(path) as ds:
            sel = ds["et"].sel(time=days[days.year == year]).sel(lat=xr.DataArray(grid.lat, dims="lat"),
                                                                  lon=xr.DataArray(grid.lon, dims="lon"),
                                                                  method="nearest")
            out[np.flatnonzero(days.year == year)] = sel.to_numpy()
    return out


def grid_features(reader: InputReader, settings: Settings, days: pd.DatetimeIndex) -> np.ndarray:
    """Features ``(days, H, W, F)`` of the whole grid."""
    elevation = elevation_on_grid(settings, reader.grid, reader.cache)
    return np.stack([grid_day(reader, d, elevation)[0] for d in days])


def seam_score(field: np.ndarray, lat: np.ndarray, lon: np.ndarray, resolution: float, offset: float) -> float:
    """Mean |neighbour difference| across source-cell edges minus within source cells [units of
    ``field (days, H, W)``]."""
    col_id = np.floor((lon - offset) / resolution + 0.5).astype(int)
    row_id = np.floor((lat - offset) / resolution + 0.5).astype(int)
    dx = np.abs(np.diff(field, axis=2))
    dy = np.abs(np.diff(field, axis=1))
    cross_x, cross_y = np.diff(col_id) != 0, np.diff(row_id) != 0
    across = np.concatenate([dx[:, :, cross_x].ravel(), dy[:, cross_y, :].ravel()])
    inside = np.concatenate([dx[:, :, ~cross_x].ravel(), dy[:, ~cross_y, :].ravel()])
    a, b = np.nanmean(across) if across.size else np.nan, np.nanmean(inside) if inside.size else np.nan
    return float(a - b)


def distance_to_stations_km(grid: TargetGrid, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """``(H, W)`` distance of each cell centre to the nearest of the stations [km]."""
    glat, glon = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    best = np.full(grid.shape, np.inf)
    for la, lo in zip(lat, lon):
        dy = (glat - la) * KM_PER_DEG
        dx = (glon - lo) * KM_PER_DEG * np.cos(np.deg2rad(la))
        best = np.minimum(best, np.hypot(dx, dy))
    return best


def grid_predictions(features: np.ndarray, window: int, baselines: dict[str, object],
                     models: dict[str, object]) -> dict[str, np.ndarray]:
    """Every model on the grid for days ``window-1 ..`` of ``features (days, H, W, F)``:
    ``name -> (days - window + 1, H, W)``."""
    from training.export import GridGcnGru
    n_days, h, w, f = features.shape
    out: dict[str, np.ndarray] = {}
    if baselines:
        flat = features.reshape(n_days, h * w, 1, f).transpose(1, 0, 2, 3)      # (cells, days, 1, F)
        pseudo = SampleSet(features=flat, lst_modis=flat[..., FEATURES.index("lst")],
                           lst_skt=flat[..., FEATURES.index("lst")], targets=np.zeros(flat.shape[:2], np.float32),
                           days=pd.date_range("2000-01-01", periods=n_days, freq="D"),
                           stations=pd.DataFrame({"station_id": np.arange(h * w).astype(str)}),
                           patch_valid=np.ones((h * w, 1), bool), patch_size=1, window_days=window)
        s, d = np.meshgrid(np.arange(h * w), np.arange(window - 1, n_days), indexing="ij")
        keys = pd.DataFrame({"s": s.ravel(), "d": d.ravel()})
        frame = cell_frame(pseudo, keys, np.zeros(h * w, int))
        for name, model in baselines.items():
            out[name] = model.predict(frame).reshape(h * w, -1).T.reshape(-1, h, w)
    for name, model in models.items():
        grid_model = GridGcnGru(model).eval()
        mask = torch.as_tensor(np.isfinite(features[0, :, :, FEATURES.index("lat")]).astype(np.float32))[None]
        preds = []
        with torch.no_grad():
            for d in range(window - 1, n_days):
                x = torch.as_tensor(features[d - window + 1:d + 1][None])
                preds.append(grid_model(x, mask)[0].numpy())
        out[name] = np.stack(preds)
    for raw, column in (("gleam", "gleam_et"), ("era5land", "era5land_et")):
        out[raw] = features[window - 1:, :, :, FEATURES.index(column)]
    return out


def truth_scores(predictions: dict[str, np.ndarray], truth: np.ndarray, grid: TargetGrid,
                 distance_km: np.ndarray, away_km: float) -> TruthScores:
    """The scores above for each model's ``(days, H, W)`` prediction against ``truth``."""
    away = distance_km >= away_km
    rows, maps = [], {}
    truth_seams = {g: seam_score(truth, grid.lat, grid.lon, *spec) for g, spec in SOURCE_GRIDS.items()}
    for name, pred in predictions.items():
        err2 = (pred.astype(np.float64) - truth) ** 2
        with np.errstate(invalid="ignore"):
            maps[name] = np.sqrt(np.nanmean(err2, axis=0))
        rec = {"model": name, "rmse_all": float(np.sqrt(np.nanmean(err2))),
               "rmse_away": float(np.sqrt(np.nanmean(err2[:, away]))) if away.any() else float("nan"),
               "rmse_near": float(np.sqrt(np.nanmean(err2[:, ~away]))) if (~away).any() else float("nan"),
               "cells_away": int(away.sum()), "days": int(pred.shape[0])}
        for g, spec in SOURCE_GRIDS.items():
            rec[f"seam_{g}"] = seam_score(pred, grid.lat, grid.lon, *spec)
            rec[f"truth_seam_{g}"] = truth_seams[g]
        rows.append(rec)
    return TruthScores(pd.DataFrame(rows), maps, truth_seams)


def map_plot(scores: TruthScores, grid: TargetGrid, path: Path, stations: pd.DataFrame, models: list[str]) -> Path:
    """RMSE maps against the truth, training stations marked (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in models if m in scores.maps]
    vmax = float(np.nanpercentile(np.stack([scores.maps[m] for m in models]), 98))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
    extent = (grid.lon_min, grid.lon_max, grid.lat_min, grid.lat_max)
    for ax, m in zip(axes[0], models):
        im = ax.imshow(scores.maps[m], extent=extent, vmin=0, vmax=vmax, cmap="magma_r", aspect="auto")
        ax.plot(stations["lon"], stations["lat"], "c.", ms=3)
        ax.set_title(f"{m}: RMSE vs truth", fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), label="mm/day")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def scored_days(start: pd.Timestamp, end: pd.Timestamp, n_days: int) -> pd.DatetimeIndex:
    """``n_days`` days spread evenly from ``start`` to ``end`` (every day when the period is
    shorter): the first days of a final period that starts in winter would judge models on the
    days with the least ET, so the grid is scored across the period's seasons instead."""
    span = (end - start).days + 1
    if span <= n_days:
        return pd.date_range(start, end, freq="D")
    offsets = np.unique(np.round(np.linspace(0, span - 1, n_days)).astype(int))
    return pd.DatetimeIndex([start + pd.Timedelta(days=int(k)) for k in offsets])


def evaluate_truth(result, settings: Settings, store, truth_folder: Path, out_folder: Path,
                   n_days: int = 14) -> TruthScores:
    """Score the protocol's final models (fitted on all development stations) against the truth on
    ``n_days`` days spread over the final test period (``scored_days``), over the whole grid."""
    grid = TargetGrid.from_region(settings.region)
    reader = InputReader(store, settings, grid)
    window = settings.window_days
    start = result.final.start
    end = pd.Timestamp(result.final_frame["date"].max()) if len(result.final_frame) else start
    days = scored_days(start, max(end, start), n_days)
    models = {k: v for k, v in result.final_models.items() if k == "gcn_gru"}
    parts: dict[str, list[np.ndarray]] = {}
    for day in days:                      # each scored day with its own window of inputs
        window_days = pd.date_range(day - pd.Timedelta(days=window - 1), day, freq="D")
        one = grid_predictions(grid_features(reader, settings, window_days), window, result.final_baselines, models)
        for name, pred in one.items():
            parts.setdefault(name, []).append(pred)
    preds = {name: np.concatenate(v) for name, v in parts.items()}
    truth = read_truth(truth_folder, days, grid)
    train = result.dev_stations
    distance = distance_to_stations_km(grid, train["lat"].to_numpy(), train["lon"].to_numpy())
    scores = truth_scores(preds, truth, grid, distance, settings.evaluation.away_km)
    show = [m for m in ("gcn_gru", result.strongest_baseline, "linear_both", "era5land") if m in preds]
    map_plot(scores, grid, out_folder / "plots" / "truth_rmse_maps.png", train, list(dict.fromkeys(show)))
    return scores
