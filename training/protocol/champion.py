"""Score a registered model (ONNX, e.g. the champion) on the harmonised inputs at every station and
flux-tower day, next to the raw products, with block-bootstrap intervals.

Unlike the cross-validation this is not a test of generalisation: the champion was trained on some
of these stations.  The table says which rows are the champion's training stations and which are
not (``in_training``), and by target source (CMA stations, other stations, FLUXNET towers).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.pipeline import onnx_predict
from training.protocol.folds import station_table
from training.protocol.frame import cell_frame
from training.protocol.scores import score_tables
from training.samples import SampleSet


def score_registered(samples: SampleSet, settings, onnx_path, training_stations: list[str] | None = None
                     ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The station-day frame with a ``champion`` column and its tables (overall, season, regime,
    station, and ``by_group``: per target source and training/not-training station)."""
    cfg = settings.evaluation
    keys = samples.keys()
    blocks = station_table(samples, cfg.block_km)["block"].to_numpy()
    frame = cell_frame(samples, keys, blocks)
    frame["gleam"], frame["era5land"] = frame["gleam_et"], frame["era5land_et"]
    frame["champion"] = onnx_predict(onnx_path, samples, keys).astype(np.float64)
    frame["source"] = samples.stations["source"].to_numpy()[frame["s"].to_numpy()]
    trained = set(training_stations or [])
    frame["in_training"] = frame["station_id"].isin(trained)
    models = ["champion", "gleam", "era5land"]
    tables = score_tables(frame, models, block_days=cfg.bootstrap_block_days, samples=cfg.bootstrap_samples,
                          seed=cfg.seed, reference="era5land")
    groups = []
    for (source, inside), part in frame.groupby(["source", "in_training"]):
        sub = score_tables(part, models, block_days=cfg.bootstrap_block_days, samples=cfg.bootstrap_samples,
                           seed=cfg.seed)["overall"]
        groups.append(sub.assign(group=f"{source}, {'training' if inside else 'not training'} stations"))
    tables["by_group"] = pd.concat(groups, ignore_index=True) if groups else pd.DataFrame()
    return frame, tables
