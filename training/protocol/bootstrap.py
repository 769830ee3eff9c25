"""Block bootstrap intervals for skill scores and for differences between models.

Errors are correlated in space (shared forcing errors over 50-150 km) and in time (soil-moisture
memory), so resampling single station-days would give intervals far too narrow.  Rows are grouped
into clusters (spatial block x time block of ``bootstrap_block_days``); each resample draws whole
clusters with replacement.  Every score here (RMSE, MAE, RB, CC, KGE) is a function of a few sums
per cluster, so a resample is one matrix product: thousands of resamples take milliseconds.
The same resampled clusters are used for every model, so differences are paired.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SCORES = ("rmse", "mae", "rb_percent", "cc", "kge")
#: per-cluster sums: n, o, s, o^2, s^2, o*s, (s-o)^2, |s-o|
_N, _O, _S, _OO, _SS, _OS, _EE, _AE = range(8)


def cluster_ids(frame: pd.DataFrame, block_days: int, origin: pd.Timestamp | None = None) -> np.ndarray:
    """Cluster of each row: its station's spatial ``block`` x the time block of its ``date``."""
    dates = pd.to_datetime(frame["date"])
    origin = origin if origin is not None else dates.min()
    tblock = ((dates - origin).dt.days // block_days).to_numpy()
    _, ids = np.unique(np.stack([frame["block"].to_numpy(), tblock]), axis=1, return_inverse=True)
    return ids.ravel()


def cluster_sums(obs: np.ndarray, sim: np.ndarray, clusters: np.ndarray, n_clusters: int) -> np.ndarray:
    """``(n_clusters, 8)`` sums of the paired rows where both ``obs`` and ``sim`` are finite."""
    ok = np.isfinite(obs) & np.isfinite(sim)
    o, s, c = obs[ok].astype(np.float64), sim[ok].astype(np.float64), clusters[ok]
    parts = [np.ones_like(o), o, s, o * o, s * s, o * s, (s - o) ** 2, np.abs(s - o)]
    return np.stack([np.bincount(c, weights=p, minlength=n_clusters) for p in parts], axis=1)


def scores_from_sums(sums: np.ndarray) -> dict[str, np.ndarray]:
    """Scores from sums ``(..., 8)``; NaN where undefined (no pairs, constant series, zero mean)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        n = sums[..., _N]
        mo, ms = sums[..., _O] / n, sums[..., _S] / n
        vo = np.maximum(sums[..., _OO] / n - mo ** 2, 0.0)
        vs = np.maximum(sums[..., _SS] / n - ms ** 2, 0.0)
        cov = sums[..., _OS] / n - mo * ms
        cc = np.where((vo > 1e-12) & (vs > 1e-12), cov / np.sqrt(vo * vs), np.nan)
        alpha = np.sqrt(vs / vo)
        beta = ms / mo
        kge = 1.0 - np.sqrt((cc - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2)
        return {"rmse": np.sqrt(sums[..., _EE] / n), "mae": sums[..., _AE] / n,
                "rb_percent": np.where(sums[..., _O] != 0, 100.0 * (sums[..., _S] - sums[..., _O]) / sums[..., _O], np.nan),
                "cc": cc, "kge": np.where(np.isfinite(cc) & (mo != 0), kge, np.nan)}


def resample_weights(n_clusters: int, samples: int, seed: int) -> np.ndarray:
    """``(samples, n_clusters)`` how often each cluster is drawn in each resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=samples).astype(np.float64)


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite resampled values (NaN, NaN when none)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(values, a)), float(np.quantile(values, 1 - a))


def scores_with_intervals(obs: np.ndarray, sim: np.ndarray, clusters: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """Point scores and 95 % block-bootstrap bounds ``<score>_lo`` / ``<score>_hi``, plus ``n``."""
    sums = cluster_sums(obs, sim, clusters, weights.shape[1])
    point = scores_from_sums(sums.sum(axis=0))
    boot = scores_from_sums(weights @ sums)
    out: dict[str, float] = {"n": int(sums[:, _N].sum())}
    for name in SCORES:
        out[name] = float(point[name])
        out[f"{name}_lo"], out[f"{name}_hi"] = interval(boot[name])
    return out


def difference_interval(obs: np.ndarray, sim_a: np.ndarray, sim_b: np.ndarray, clusters: np.ndarray,
                        weights: np.ndarray, score: str = "rmse") -> dict[str, float]:
    """``score(a) - score(b)`` on the rows both have, with its paired 95 % bootstrap interval.

    Negative means ``a`` has the lower score (for RMSE: ``a`` is better).  The interval excludes
    0 only when the difference is larger than the sampling noise of the clusters.
    """
    both = np.isfinite(sim_a) & np.isfinite(sim_b)
    sa = cluster_sums(obs, np.where(both, sim_a, np.nan), clusters, weights.shape[1])
    sb = cluster_sums(obs, np.where(both, sim_b, np.nan), clusters, weights.shape[1])
    point = float(scores_from_sums(sa.sum(axis=0))[score] - scores_from_sums(sb.sum(axis=0))[score])
    boot = scores_from_sums(weights @ sa)[score] - scores_from_sums(weights @ sb)[score]
    lo, hi = interval(boot)
    return {"diff": point, "lo": lo, "hi": hi, "n": int(sa[:, _N].sum())}
