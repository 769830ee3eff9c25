"""Skill scores of a prediction ``sim`` against observations ``obs``, both in the same units.

Pure functions over paired arrays; pairs where either side is NaN are dropped first (shared
masking), and an empty or constant input returns NaN rather than raising.
"""

from __future__ import annotations

import numpy as np


def _pairs(obs, sim) -> tuple[np.ndarray, np.ndarray]:
    obs = np.asarray(obs, dtype=np.float64).ravel()
    sim = np.asarray(sim, dtype=np.float64).ravel()
    if obs.shape != sim.shape:
        raise ValueError(f"obs and sim must pair up: got {obs.shape} and {sim.shape} values")
    ok = np.isfinite(obs) & np.isfinite(sim)
    return obs[ok], sim[ok]


def rmse(obs, sim) -> float:
    """Root-mean-square error [units of the inputs]."""
    o, s = _pairs(obs, sim)
    return float(np.sqrt(np.mean((s - o) ** 2))) if o.size else float("nan")


def mae(obs, sim) -> float:
    """Mean absolute error [units of the inputs]."""
    o, s = _pairs(obs, sim)
    return float(np.mean(np.abs(s - o))) if o.size else float("nan")


def relative_bias(obs, sim) -> float:
    """RB = 100 * sum(P - O) / sum(O) [%]."""
    o, s = _pairs(obs, sim)
    total = o.sum()
    return float(100.0 * (s - o).sum() / total) if o.size and total != 0 else float("nan")


def pearson_cc(obs, sim) -> float:
    """Pearson correlation coefficient [unitless]."""
    o, s = _pairs(obs, sim)
    if o.size < 2 or o.std() == 0 or s.std() == 0:
        return float("nan")
    return float(np.corrcoef(o, s)[0, 1])


def kge(obs, sim) -> float:
    """Kling-Gupta efficiency, 1 - sqrt((r-1)^2 + (alpha-1)^2 + (beta-1)^2) (Gupta et al. 2009) [unitless]."""
    o, s = _pairs(obs, sim)
    if o.size < 2 or o.std() == 0 or o.mean() == 0:
        return float("nan")
    r = pearson_cc(o, s)
    alpha = s.std() / o.std()
    beta = s.mean() / o.mean()
    return float(1.0 - np.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2))


def all_scores(obs, sim) -> dict[str, float]:
    """Every score above plus the number of pairs used."""
    o, s = _pairs(obs, sim)
    return {"n": int(o.size), "rmse": rmse(o, s), "mae": mae(o, s), "rb_percent": relative_bias(o, s),
            "cc": pearson_cc(o, s), "kge": kge(o, s)}
