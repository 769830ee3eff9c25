"""Evaluation against held-out stations: the fused model next to raw GLEAM, raw ERA5-Land and the
current champion, on exactly the same station-days; tables and PNG plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from etfuse.features import FEATURES
from etfuse.metrics import all_scores
from training.samples import SampleSet, Split

SEASONS = {12: "DJF", 1: "DJF", 2: "DJF", 3: "MAM", 4: "MAM", 5: "MAM", 6: "JJA", 7: "JJA", 8: "JJA",
           9: "SON", 10: "SON", 11: "SON"}
RAW = {"gleam": "gleam_et", "era5land": "era5land_et"}


def heldout_frame(samples: SampleSet, split: Split) -> pd.DataFrame:
    """One row per held-out station-day: keys, set name, station, date, season, observation, raw sources."""
    parts = []
    for name, keys in (("spatial", split.spatial), ("temporal", split.temporal), ("spatial+temporal", split.heldout_late)):
        if len(keys):
            parts.append(keys.assign(set=name))
    frame = pd.concat(parts, ignore_index=True)
    s, d = frame["s"].to_numpy(), frame["d"].to_numpy()
    frame["station_id"] = samples.stations["station_id"].to_numpy()[s]
    frame["date"] = samples.days[d]
    frame["season"] = [SEASONS[m] for m in frame["date"].dt.month]
    frame["obs"] = samples.targets[s, d]
    for name, feature in RAW.items():
        frame[name] = samples.features[s, d, samples.centre, FEATURES.index(feature)]
    return frame


def score_table(frame: pd.DataFrame, models: list[str], by: str | None = None) -> pd.DataFrame:
    """Scores of each model on the rows where the observation and every model have a value."""
    common = frame.dropna(subset=["obs", *models])
    groups = [("all", common)] if by is None else list(common.groupby(by))
    rows = []
    for key, part in groups:
        for model in models:
            rows.append({"group": key, "model": model, **all_scores(part["obs"], part[model])})
    return pd.DataFrame(rows)


def summary_metrics(frame: pd.DataFrame, models: list[str]) -> dict[str, float]:
    """Flat metrics for MLflow and the gate: ``heldout_<model>_<score>`` and per hold-out set."""
    out: dict[str, float] = {}
    overall = score_table(frame, models)
    for rec in overall.itertuples():
        for score in ("rmse", "mae", "rb_percent", "cc", "kge"):
            out[f"heldout_{rec.model}_{score}"] = float(getattr(rec, score))
    out["heldout_n"] = float(overall["n"].iloc[0]) if len(overall) else 0.0
    by_set = score_table(frame, models, by="set")
    for rec in by_set.itertuples():
        out[f"{rec.group.replace('+', '_')}_{rec.model}_rmse"] = float(rec.rmse)
    return out


def plots(frame: pd.DataFrame, models: list[str], folder: Path) -> list[Path]:
    """Scatter per model, time series at up to three stations, per-station RMSE bars (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    common = frame.dropna(subset=["obs", *models])
    paths = []
    if common.empty:
        return paths
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 4), sharex=True, sharey=True)
    top = float(np.nanpercentile(common[["obs", *models]].to_numpy(), 99.5)) if len(common) else 1.0
    for ax, model in zip(np.atleast_1d(axes), models):
        ax.scatter(common["obs"], common[model], s=4, alpha=0.4)
        ax.plot([0, top], [0, top], color="k", lw=0.8)
        score = all_scores(common["obs"], common[model])
        ax.set_title(f"{model}: RMSE {score['rmse']:.2f}, CC {score['cc']:.2f}")
        ax.set_xlabel("station ET [mm/day]")
    np.atleast_1d(axes)[0].set_ylabel("estimated ET [mm/day]")
    fig.tight_layout()
    paths.append(folder / "scatter.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    stations = common.groupby("station_id").size().sort_values(ascending=False).index[:3]
    fig, axes = plt.subplots(len(stations), 1, figsize=(10, 2.6 * max(len(stations), 1)), squeeze=False)
    for ax, sid in zip(axes[:, 0], stations):
        part = frame[frame["station_id"] == sid].sort_values("date")
        ax.plot(part["date"], part["obs"], "k.", ms=3, label="station")
        for model in models:
            ax.plot(part["date"], part[model], lw=0.8, label=model)
        ax.set_title(f"station {sid}")
        ax.set_ylabel("ET [mm/day]")
    axes[0, 0].legend(fontsize=7, ncol=len(models) + 1)
    fig.tight_layout()
    paths.append(folder / "timeseries.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    per_station = score_table(frame, models, by="station_id").pivot(index="group", columns="model", values="rmse")
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(per_station)), 4))
    per_station[models].plot.bar(ax=ax)
    ax.set_ylabel("RMSE [mm/day]")
    ax.set_xlabel("held-out station")
    fig.tight_layout()
    paths.append(folder / "per_station_rmse.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)
    return paths
