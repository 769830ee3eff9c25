"""The protocol's yardstick inside one training run: baselines fitted on the run's training
stations, scored on its held-out station-days next to the candidate, and the paired block-bootstrap
comparisons the gate needs (candidate vs champion, candidate vs the strongest baseline)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from etfuse.settings import Settings
from training.gate import Comparison
from training.protocol.baselines import baselines
from training.protocol.bootstrap import cluster_ids, difference_interval, resample_weights
from training.protocol.folds import station_table
from training.protocol.frame import cell_frame
from training.samples import SampleSet


def add_baselines(samples: SampleSet, train_keys: pd.DataFrame, heldout: pd.DataFrame,
                  settings: Settings) -> tuple[list[str], dict[str, str]]:
    """Fit every baseline on ``train_keys`` station-days and add its prediction to ``heldout``
    (a frame with ``s``, ``d`` columns, e.g. training.evaluate.heldout_frame).

    Returns the names of the baseline columns added and, per baseline that could not be fitted on
    these data (e.g. a GLEAM correction when no training day has GLEAM), the reason: such a
    baseline does not exist for this run, so the gate compares with the strongest one that does.
    """
    blocks = station_table(samples, settings.evaluation.block_km)["block"].to_numpy()
    train = cell_frame(samples, train_keys, blocks)
    test = cell_frame(samples, heldout[["s", "d"]], blocks)
    names, skipped = [], {}
    for name, model in baselines(settings.evaluation.seed).items():
        try:
            heldout[f"baseline_{name}"] = model.fit(train).predict(test)
        except ValueError as exc:           # too few training rows with this baseline's inputs
            skipped[name] = str(exc)
            continue
        names.append(f"baseline_{name}")
    heldout["block"] = blocks[heldout["s"].to_numpy()]
    return names, skipped


def comparisons(frame: pd.DataFrame, candidate: str, references: dict[str, str],
                settings: Settings) -> list[Comparison]:
    """Paired RMSE differences of ``candidate`` with each reference column (label -> column), on the
    rows where the observation and every one of them have a value; 95 % block-bootstrap intervals."""
    cfg = settings.evaluation
    data = frame.dropna(subset=["obs", candidate, *references.values()]).reset_index(drop=True)
    if data.empty:
        return [Comparison(label, float("nan"), float("nan"), float("nan")) for label in references]
    clusters = cluster_ids(data, cfg.bootstrap_block_days)
    weights = resample_weights(int(clusters.max()) + 1, cfg.bootstrap_samples, cfg.seed)
    out = []
    for label, column in references.items():
        d = difference_interval(data["obs"].to_numpy(), data[candidate].to_numpy(), data[column].to_numpy(),
                                clusters, weights)
        out.append(Comparison(label, d["diff"], d["lo"], d["hi"]))
    return out


def strongest(frame: pd.DataFrame, columns: list[str]) -> str:
    """The baseline column with the lowest RMSE on the rows every column and the observation share."""
    data = frame.dropna(subset=["obs", *columns])
    rmse = {c: float(np.sqrt(np.mean((data[c] - data["obs"]) ** 2))) for c in columns}
    return min(rmse, key=rmse.get)
