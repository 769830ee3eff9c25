"""Per-pixel 90 % prediction intervals of the fused ET: conformal scaling of the model's quantiles.

The model has three outputs per cell: ``et`` (the point estimate, trained on squared error) and
raw 5 % and 95 % quantiles (``et_q05 <= et <= et_q95``, trained on the pinball loss).  Quantile
heads learnt on training stations are too narrow where the model has never seen a station, which
is almost everywhere on the grid.  So the two half-widths are scaled by a lower and an upper
factor per season, calibrated on station-days the model was not trained on (split conformal
prediction on scaled scores, as in conformalised quantile regression):

    below  = (et - y) / (et - q05),   above = (y - et) / (q95 - et)
    f_lo   = the conformal (1 - b) quantile of ``below``, f_hi = the (1 - (a - b)) quantile of ``above``
    lower  = max(0, et - f_lo * (et - q05)),  upper = et + f_hi * (q95 - et)

where ``a = 1 - level`` is the share allowed outside and ``b`` (how much of it falls below) is the
split that gives the narrowest mean interval on the calibration rows.  A row misses on at most
one side, so the miss rate stays at most ``a`` whatever the split.  The split matters in winter:
about half of the station-days are 0 mm there, the lower bound is 0 and cannot miss them, so the
whole 10 % goes to the upper side; a symmetric split would cover 95 %.  The factors travel with
the model (ONNX metadata ``interval_calibration``) and serving applies them to each day's raw
quantiles.
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


def side_scores(et: np.ndarray, q05: np.ndarray, q95: np.ndarray, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How many lower (upper) half-widths an observation lies below (above) ``et``: a row is
    inside the raw interval when both are at most 1."""
    et, q05, q95, obs = (np.asarray(a, dtype=np.float64) for a in (et, q05, q95, obs))
    return (et - obs) / np.maximum(et - q05, _EPS), (obs - et) / np.maximum(q95 - et, _EPS)


def conformity_scores(et: np.ndarray, q05: np.ndarray, q95: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """How many half-widths an observation lies outside (> 1) or inside (<= 1) the raw interval."""
    return np.maximum(*side_scores(et, q05, q95, obs))


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The finite-sample conformal quantile: the ceil((n + 1) level)-th smallest score."""
    s = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
    if s.size == 0:
        raise IntervalError("no finite conformity scores to calibrate the interval on")
    k = min(s.size, math.ceil((s.size + 1) * level))
    return float(s[max(k, 1) - 1])


#: candidate shares of the allowed misses that fall below the interval (0 .. 1 of ``1 - level``)
SPLITS = np.linspace(0.0, 1.0, 21)


def split_factors(et: np.ndarray, q05: np.ndarray, q95: np.ndarray, obs: np.ndarray, level: float) -> tuple[float, float]:
    """The (lower, upper) factors of the narrowest mean interval whose two sides together miss at
    most ``1 - level`` of the rows (each side a conformal quantile of its own score)."""
    below, above = side_scores(et, q05, q95, obs)
    et, q05, q95 = (np.asarray(a, dtype=np.float64) for a in (et, q05, q95))
    alpha = 1.0 - level
    best = None
    for share in SPLITS:
        f_lo = conformal_quantile(below, 1.0 - alpha * share)
        f_hi = conformal_quantile(above, 1.0 - alpha * (1.0 - share))
        width = float(np.mean(np.minimum(et, f_lo * np.maximum(et - q05, 0)) + f_hi * np.maximum(q95 - et, 0)))
        if best is None or width < best[0] - 1e-12:
            best = (width, f_lo, f_hi)
    return best[1], best[2]


Factors = tuple[float, float]


def _pair(value) -> Factors:
    """(lower, upper) from a pair, or from one number (calibrations written before the split)."""
    if isinstance(value, (int, float)):
        return float(value), float(value)
    lo, hi = value
    return float(lo), float(hi)


@dataclass(frozen=True)
class IntervalCalibration:
    """(lower, upper) scale factors of the raw half-widths, per season, and what they were fitted on."""

    level: float
    factors: dict[str, Factors]
    overall: Factors
    samples: dict[str, int] = field(default_factory=dict)

    def factor(self, day) -> Factors:
        return self.factors.get(season_of(day), self.overall)

    def describe(self) -> str:
        """``all 1.00/1.20, DJF 1.00/0.85, ...`` (lower/upper factors) for logs and cards."""
        parts = [("all", self.overall)] + sorted(self.factors.items())
        return ", ".join(f"{k} {lo:.2f}/{hi:.2f}" for k, (lo, hi) in parts)

    def to_json(self) -> str:
        return json.dumps({"level": self.level, "factors": self.factors, "overall": self.overall,
                           "samples": self.samples}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = "interval_calibration") -> "IntervalCalibration":
        try:
            d = json.loads(text)
            return cls(float(d["level"]), {str(k): _pair(v) for k, v in d["factors"].items()}, _pair(d["overall"]),
                       {str(k): int(v) for k, v in d.get("samples", {}).items()})
        except (TypeError, ValueError, KeyError) as exc:
            raise IntervalError(f"{source}: expected JSON with level, factors and overall; found {text[:120]!r} "
                                f"({exc})") from exc


def calibrate(et: np.ndarray, q05: np.ndarray, q95: np.ndarray, obs: np.ndarray, seasons: np.ndarray,
              level: float = LEVEL) -> IntervalCalibration:
    """Per-season scale factors from held-out station-days (``seasons``: DJF/MAM/JJA/SON per row)."""
    et, q05, q95, obs = (np.asarray(a, dtype=np.float64) for a in (et, q05, q95, obs))
    seasons = np.asarray(seasons)
    ok = np.isfinite(conformity_scores(et, q05, q95, obs))
    if not ok.any():
        raise IntervalError("no finite conformity scores to calibrate the interval on")
    pick = lambda sel: split_factors(et[sel], q05[sel], q95[sel], obs[sel], level)  # noqa: E731
    factors, samples = {}, {"all": int(ok.sum())}
    for season in sorted(set(SEASON_OF_MONTH.values())):
        sel = ok & (seasons == season)
        samples[season] = int(sel.sum())
        if sel.sum() >= MIN_SEASON_SAMPLES:
            factors[season] = pick(sel)
    return IntervalCalibration(level, factors, pick(ok), samples)


def apply_interval(et: np.ndarray, q05: np.ndarray, q95: np.ndarray, lower_factor, upper_factor=None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated bounds [mm]: the raw lower / upper half-widths times their factors (numbers or
    one per value; ``upper_factor`` defaults to ``lower_factor``)."""
    et = np.asarray(et, dtype=np.float32)
    f_lo = np.asarray(lower_factor, dtype=np.float32)
    f_hi = f_lo if upper_factor is None else np.asarray(upper_factor, dtype=np.float32)
    lower = np.maximum(et - f_lo * np.maximum(et - np.asarray(q05, np.float32), 0), 0).astype(np.float32)
    upper = (et + f_hi * np.maximum(np.asarray(q95, np.float32) - et, 0)).astype(np.float32)
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
