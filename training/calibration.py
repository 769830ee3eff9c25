"""The calibration step of training: conformal scale factors of the interval, and its coverage.

Pure functions over the held-out frame (``training.evaluate.heldout_frame`` plus the model's raw
outputs): calibrated on station-days of stations the model never trained on (the spatial
hold-out, the situation of almost every grid cell), checked on the rest of the held-out
station-days (the final period), which the calibration never saw.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from etfuse.interval import LEVEL, MIN_SEASON_SAMPLES, IntervalCalibration, apply_interval, calibrate, coverage_table

#: the held-out set the factors are fitted on, and the sets their coverage is checked on
CALIBRATION_SET = "spatial"


def calibrate_frame(frame: pd.DataFrame, *, et: str = "fused", q05: str = "fused_q05_raw",
                    q95: str = "fused_q95_raw", level: float = LEVEL) -> tuple[IntervalCalibration, str]:
    """Factors from the spatial hold-out's rows (or every held-out row when it has fewer than
    ``MIN_SEASON_SAMPLES``); returns the calibration and which rows it used."""
    ok = np.isfinite(frame["obs"].to_numpy(float))
    on = ok & (frame["set"] == CALIBRATION_SET).to_numpy()
    used = CALIBRATION_SET
    if on.sum() < MIN_SEASON_SAMPLES:
        on, used = ok, "all held-out"
    part = frame[on]
    return calibrate(part[et], part[q05], part[q95], part["obs"], part["season"].to_numpy(), level), used


def with_interval(frame: pd.DataFrame, calibration: IntervalCalibration, *, et: str = "fused",
                  q05: str = "fused_q05_raw", q95: str = "fused_q95_raw", prefix: str = "fused") -> pd.DataFrame:
    """``frame`` plus ``<prefix>_lower`` / ``<prefix>_upper``: the calibrated bounds of each row's day."""
    factor = np.array([calibration.factor(d) for d in frame["date"]], dtype=np.float32).reshape(-1, 2)
    lower, upper = apply_interval(frame[et].to_numpy(), frame[q05].to_numpy(), frame[q95].to_numpy(),
                                  factor[:, 0], factor[:, 1])
    return frame.assign(**{f"{prefix}_lower": lower, f"{prefix}_upper": upper})


def interval_check(frame: pd.DataFrame, used: str, *, prefix: str = "fused") -> pd.DataFrame:
    """Coverage and width per season on the rows the calibration did not use (all rows if it used all)."""
    rows = frame if used != CALIBRATION_SET else frame[frame["set"] != CALIBRATION_SET]
    return coverage_table(rows, f"{prefix}_lower", f"{prefix}_upper")


def interval_metrics(table: pd.DataFrame, calibration: IntervalCalibration) -> dict[str, float]:
    """Flat metrics for the registry: coverage and mean width overall and per season, and the factors."""
    out: dict[str, float] = {}
    for rec in table.itertuples(index=False):
        out[f"interval_coverage_{rec.season}"] = float(rec.coverage)
        out[f"interval_width_mm_{rec.season}"] = float(rec.mean_width_mm)
    for name, (lo, hi) in [("all", calibration.overall), *calibration.factors.items()]:
        out[f"interval_factor_lower_{name}"], out[f"interval_factor_upper_{name}"] = lo, hi
    return out
