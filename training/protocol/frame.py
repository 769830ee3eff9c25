"""Station-day tables at the station's own cell: what the baselines learn from and what every
model's predictions are scored in.

One row per key (s, d) of a ``SampleSet``: station, date, season, block, observation, the model's
per-cell features of the day (``etfuse.features.FEATURES`` at the patch centre), lags of the
time-varying ones over the model's window, 7-day means of both ET products, and the regime flags
(``has_modis``: the day's LST came from MODIS; ``has_gleam``: GLEAM ET was there).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from etfuse.features import FEATURES
from training.evaluate import SEASONS
from training.samples import SampleSet

#: features whose past days are given to the non-graph learner as lags
LAGGED = ("gleam_et", "era5land_et", "net_radiation", "lst")


def cell_frame(samples: SampleSet, keys: pd.DataFrame, blocks: np.ndarray) -> pd.DataFrame:
    """The table of ``keys``; ``blocks`` is the spatial block of each station of ``samples``."""
    s, d = keys["s"].to_numpy(), keys["d"].to_numpy()
    frame = pd.DataFrame({"s": s, "d": d})
    frame["station_id"] = samples.stations["station_id"].to_numpy()[s]
    frame["date"] = samples.days[d]
    frame["season"] = [SEASONS[m] for m in frame["date"].dt.month]
    frame["block"] = np.asarray(blocks)[s]
    frame["obs"] = samples.targets[s, d].astype(np.float64)
    centre = samples.features[:, :, samples.centre, :]                       # (stations, days, F)
    for k, name in enumerate(FEATURES):
        frame[name] = centre[s, d, k].astype(np.float64)
    lags = range(1, max(samples.window_days, 1))
    for name in LAGGED:
        k = FEATURES.index(name)
        for lag in lags:
            frame[f"{name}_lag{lag}"] = centre[s, np.maximum(d - lag, 0), k].astype(np.float64)
    for name in ("gleam_et", "era5land_et"):
        k = FEATURES.index(name)
        stack = np.stack([centre[s, np.maximum(d - lag, 0), k] for lag in range(7)], axis=1).astype(np.float64)
        with np.errstate(invalid="ignore"):
            count = np.isfinite(stack).sum(axis=1)
            frame[f"{name}_mean7"] = np.where(count > 0, np.nansum(stack, axis=1) / np.maximum(count, 1), np.nan)
    frame["has_modis"] = frame["lst_from_skt"].to_numpy() == 0
    frame["has_gleam"] = np.isfinite(frame["gleam_et"].to_numpy())
    return frame


def regime_labels(frame: pd.DataFrame) -> pd.Series:
    """``MODIS+GLEAM``, ``MODIS only``, ``GLEAM only`` or ``neither`` per row."""
    m, g = frame["has_modis"].to_numpy(bool), frame["has_gleam"].to_numpy(bool)
    labels = np.where(m & g, "with MODIS, with GLEAM", np.where(m, "with MODIS, no GLEAM",
                      np.where(g, "no MODIS, with GLEAM", "no MODIS, no GLEAM")))
    return pd.Series(labels, index=frame.index)
