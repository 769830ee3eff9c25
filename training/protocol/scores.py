"""Score tables with 95 % block-bootstrap intervals: overall, per station, per season, per regime,
and each model's RMSE difference with a reference (paired, same resamples)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.protocol.bootstrap import (SCORES, cluster_ids, difference_interval, resample_weights,
                                         scores_with_intervals)
from training.protocol.frame import regime_labels


def common_rows(frame: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """Rows where the observation and every model have a value: all models judged on the same days."""
    return frame.dropna(subset=["obs", *models]).reset_index(drop=True)


def _resampled(frame: pd.DataFrame, models: list[str], block_days: int, samples: int,
               seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The common rows of ``models`` with their regime, bootstrap clusters and resample weights."""
    data = common_rows(frame, models)
    data = data.assign(regime=regime_labels(data))
    clusters = cluster_ids(data, block_days)
    n_clusters = int(clusters.max()) + 1 if len(clusters) else 0
    weights = resample_weights(n_clusters, samples, seed) if n_clusters else np.zeros((samples, 0))
    return data, clusters, weights


def _differences(data: pd.DataFrame, models: list[str], reference: str, clusters: np.ndarray,
                 weights: np.ndarray) -> pd.DataFrame:
    obs = data["obs"].to_numpy()
    return pd.DataFrame([{"model": model, "reference": reference,
                          **difference_interval(obs, data[model].to_numpy(), data[reference].to_numpy(),
                                                clusters, weights)}
                         for model in models if model != reference])


def difference_table(frame: pd.DataFrame, models: list[str], *, reference: str, block_days: int, samples: int,
                     seed: int) -> pd.DataFrame:
    """RMSE(model) - RMSE(reference) with its paired interval, on the rows where every one of
    ``models`` has a value: the ``difference`` table of ``score_tables`` without the others."""
    data, clusters, weights = _resampled(frame, models, block_days, samples, seed)
    return _differences(data, models, reference, clusters, weights)


def score_tables(frame: pd.DataFrame, models: list[str], *, block_days: int, samples: int, seed: int,
                 reference: str | None = None) -> dict[str, pd.DataFrame]:
    """``overall``, ``season``, ``regime``, ``station`` tables (one row per group x model) and,
    with a ``reference`` model, ``difference``: RMSE(model) - RMSE(reference) with its interval."""
    data, clusters, weights = _resampled(frame, models, block_days, samples, seed)
    obs = data["obs"].to_numpy()
    tables: dict[str, pd.DataFrame] = {}
    for name, by in (("overall", None), ("season", "season"), ("regime", "regime"), ("station", "station_id")):
        rows = []
        groups = [("all", np.ones(len(data), bool))] if by is None else \
            [(key, (data[by] == key).to_numpy()) for key in sorted(data[by].unique())]
        for key, mask in groups:
            for model in models:
                sim = np.where(mask, data[model].to_numpy(), np.nan)
                rows.append({"group": key, "model": model,
                             **scores_with_intervals(obs, sim, clusters, weights)})
        tables[name] = pd.DataFrame(rows)
    if reference is not None:
        tables["difference"] = _differences(data, models, reference, clusters, weights)
    return tables


def markdown_table(table: pd.DataFrame, *, group: bool = True) -> str:
    """A score table as Markdown: each score as ``value [lo, hi]``."""
    head = (["group"] if group else []) + ["model", "n"] + [s.upper().replace("_PERCENT", " %") for s in SCORES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in table.to_dict("records"):
        cells = ([str(rec["group"])] if group else []) + [str(rec["model"]), str(rec["n"])]
        for s in SCORES:
            digits = 1 if s == "rb_percent" else 3
            cells.append(f"{rec[s]:.{digits}f} [{rec[f'{s}_lo']:.{digits}f}, {rec[f'{s}_hi']:.{digits}f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_difference(table: pd.DataFrame) -> str:
    """RMSE differences with a reference as Markdown; 'yes' where the interval lies below 0."""
    lines = ["| model | reference | RMSE diff [mm/d] | 95 % interval | better beyond interval |", "|---|---|---|---|---|"]
    for rec in table.to_dict("records"):
        verdict = "yes" if rec["hi"] < 0 else ("worse" if rec["lo"] > 0 else "no (tie)")
        lines.append(f"| {rec['model']} | {rec['reference']} | {rec['diff']:+.3f} | [{rec['lo']:+.3f}, {rec['hi']:+.3f}] "
                     f"| {verdict} |")
    return "\n".join(lines)
