"""Per-pixel 90 % prediction intervals of the fused ET: conformal scaling of the model's quantiles.

The model has three outputs per cell: ``et`` (the point estimate, trained on squared error) and
raw 5 % and 95 % quantiles (``et_q05 <= et <= et_q95``, trained on the pinball loss).  Quantile
heads learnt on training stations are too narrow where the model has never seen a station, which
is almost everywhere on the grid.  So the half-widths are scaled by one factor per season,
calibrated on station-days the model was not trained on (split conformal prediction on a
scaled score, as in conformalised quantile regression):

    score  = max((et - y) / (et - q05), (y - et) / (q95 - et))
    factor = the ceil((n + 1) * level) / n empirical quantile of the scores of a season
    lower  = max(0, et - factor * (et - q05)),  upper = et + factor * (q95 - et)

With exchangeable calibration and product days this covers ``level`` of the station-days in each
season.  The factors travel with the model (ONNX metadata ``interval_calibration``) and serving
applies them to each day's raw quantiles.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from etfuse.errors import EtfuseError

#: the nominal level of the published interval and its quantiles
LEVEL = 0.9
QUANTILES = (0.05, 0.95)
#: names of the interval bounds in the product and the API [kg m-2 = mm per day]
BOUND_NAMES = ("et_q05", "et_q95")
#: meteorological seasons of a month (December belongs to the winter of the next January)
SEASON_OF_MONTH = {12: "DJF", 1: "DJF", 2: "DJF", 3: "MAM", 4: "MAM", 5: "MAM", 6: "JJA", 7: "JJA", 8: "JJA",
                   9: "SON", 10: "SON", 11: "SON"}
#: fewer calibration station-days than this in a season: the season uses the all-season factor
MIN_SEASON_SAMPLES = 30
_EPS = 1e-3            # [mm]: a half-width below this counts as this (no division by zero)


class IntervalError(EtfuseError):
    """The interval calibration cannot be computed or read."""


def season_of(day) -> str:
    return SEASON_OF_MONTH[pd.Timestamp(day).month]


def conformity_scores(et: np.ndarray, q05: np.ndarray, q95: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """How many half-widths an observation lies outside (> 1) or inside (<= 1) the raw interval."""
    et, q05, q95, obs = (np.asarray(a, dtype=np.float64) for a in (et, q05, q95, obs))
    below = (et - obs) / np.maximum(et - q05, _EPS)
    above = (obs - et) / np.maximum(q95 - et, _EPS)
    return np.maximum(below, above)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The finite-sample conformal quantile: the ceil((n + 1) level)-th smallest score."""
    s = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
    if s.size == 0:
        raise IntervalError("no finite conformity scores to calibrate the interval on")
    k = min(s.size, math.ceil((s.size + 1) * level))
    return float(s[k - 1])


@dataclass(frozen=True)
class IntervalCalibration:
    """Scale factors of the raw half-widths, per season, and what they were fitted on."""

    level: float
    factors: dict[str, float]
    overall: float
    samples: dict[str, int] = field(default_factory=dict)

    def factor(self, day) -> float:
        return self.factors.get(season_of(day), self.overall)

    def to_json(self) -> str:
        return json.dumps({"level": self.level, "factors": self.factors, "overall": self.overall,
                           "samples": self.samples}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = "interval_calibration") -> "IntervalCalibration":
        try:
            d = json.loads(text)
            return cls(float(d["level"]), {str(k): float(v) for k, v in d["factors"].items()}, float(d["overall"]),
                       {str(k): int(v) for k, v in d.get("samples", {}).items()})
        except (TypeError, ValueError, KeyError) as exc:
            raise IntervalError(f"{source}: expected JSON with level, factors and overall; found {text[:120]!r} "
                                f"({exc})") from exc


def calibrate(et: np.ndarray, q05: np.ndarray, q95: np.ndarray, obs: np.ndarray, seasons: np.ndarray,
              level: float = LEVEL) -> IntervalCalibration:
    """Per-season scale factors from held-out station-days (``seasons``: DJF/MAM/JJA/SON per row)."""
    scores = conformity_scores(et, q05, q95, obs)
    seasons = np.asarray(seasons)
    ok = np.isfinite(scores)
    overall = conformal_quantile(scores[ok], level)
    factors, samples = {}, {"all": int(ok.sum())}
    for season in sorted(set(SEASON_OF_MONTH.values())):
        sel = ok & (seasons == season)
        samples[season] = int(sel.sum())
        if sel.sum() >= MIN_SEASON_SAMPLES:
            factors[season] = conformal_quantile(scores[sel], level)
    return IntervalCalibration(level, factors, overall, samples)


def apply_interval(et: np.ndarray, q05: np.ndarray, q95: np.ndarray, factor) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated bounds [mm]: the raw half-widths times ``factor`` (a number or one per value)."""
    et = np.asarray(et, dtype=np.float32)
    f = np.asarray(factor, dtype=np.float32)
    lower = np.maximum(et - f * np.maximum(et - np.asarray(q05, np.float32), 0), 0).astype(np.float32)
    upper = (et + f * np.maximum(np.asarray(q95, np.float32) - et, 0)).astype(np.float32)
    return lower, upper


def coverage(obs: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of finite observations inside [lower, upper]."""
    obs, lower, upper = (np.asarray(a, dtype=np.float64) for a in (obs, lower, upper))
    ok = np.isfinite(obs) & np.isfinite(lower) & np.isfinite(upper)
    return float(np.mean((obs[ok] >= lower[ok]) & (obs[ok] <= upper[ok]))) if ok.any() else float("nan")


def coverage_table(frame: pd.DataFrame, lower: str, upper: str, *, obs: str = "obs") -> pd.DataFrame:
    """Coverage and mean width overall and per season: columns season, n, coverage, mean_width_mm."""
    rows = []
    groups = [("all", frame)] + [(s, frame[frame["season"] == s]) for s in ("DJF", "MAM", "JJA", "SON")]
    for name, part in groups:
        ok = np.isfinite(part[obs].to_numpy(float)) & np.isfinite(part[lower].to_numpy(float))
        if not ok.any():
            continue
        p = part[ok]
        rows.append({"season": name, "n": int(ok.sum()),
                     "coverage": coverage(p[obs].to_numpy(), p[lower].to_numpy(), p[upper].to_numpy()),
                     "mean_width_mm": float(np.mean(p[upper].to_numpy(float) - p[lower].to_numpy(float)))})
    return pd.DataFrame(rows)
