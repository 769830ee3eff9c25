"""Baselines fitted on a fold's training stations and scored on its held-out stations.

What a user could get more simply than the GCN-GRU, from the same per-cell inputs:

* ``climatology``: the training stations' mean ET per day of year (31-day circular window);
* ``linear_<source>``: a linear bias correction, station ET ~ the source's day value, its 7-day
  mean and the season (sin/cos of day of year), for GLEAM, for ERA5-Land and for both together;
* ``qmap_<source>``: empirical quantile mapping of the source onto station ET, per season;
* ``hgb``: gradient-boosted trees (scikit-learn ``HistGradientBoostingRegressor``) on every
  per-cell feature of the model plus lags over its window and 7-day means.

Where a baseline's input is missing on a day it falls back (both -> ERA5-Land -> climatology),
so every baseline predicts every station-day, as the product must.  Predictions are clipped at
0 (ET [mm day-1] is non-negative, as the model's softplus output is).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from etfuse.features import FEATURES
from training.protocol.frame import LAGGED

SOURCE_COLUMN = {"gleam": "gleam_et", "era5land": "era5land_et"}


def _doy(frame: pd.DataFrame) -> np.ndarray:
    return pd.to_datetime(frame["date"]).dt.day_of_year.to_numpy()


@dataclass
class Climatology:
    """Mean station ET per day of year over the training rows, smoothed over ``half_window`` days."""

    half_window: int = 15
    table: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def fit(self, frame: pd.DataFrame) -> "Climatology":
        ok = np.isfinite(frame["obs"].to_numpy())
        doy, obs = _doy(frame)[ok], frame["obs"].to_numpy()[ok]
        sums = np.bincount(doy, weights=obs, minlength=367)[1:367]
        counts = np.bincount(doy, minlength=367)[1:367].astype(float)
        kernel = np.ones(2 * self.half_window + 1)
        wrap = lambda a: np.convolve(np.concatenate([a[-self.half_window:], a, a[:self.half_window]]),  # noqa: E731
                                     kernel, mode="valid")
        s, c = wrap(sums), wrap(counts)
        overall = obs.mean() if obs.size else 0.0
        self.table = np.where(c > 0, s / np.maximum(c, 1), overall)
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.table[_doy(frame) - 1]


def _design(frame: pd.DataFrame, sources: tuple[str, ...]) -> np.ndarray:
    cols = []
    for src in sources:
        cols += [frame[SOURCE_COLUMN[src]].to_numpy(), frame[f"{SOURCE_COLUMN[src]}_mean7"].to_numpy()]
    cols += [frame["doy_sin"].to_numpy(), frame["doy_cos"].to_numpy(), np.ones(len(frame))]
    return np.stack(cols, axis=1).astype(np.float64)


@dataclass
class LinearBias:
    """Least squares of station ET on the sources' day values and 7-day means plus season terms."""

    sources: tuple[str, ...]
    fallback: object | None = None
    coef: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def fit(self, frame: pd.DataFrame) -> "LinearBias":
        x, y = _design(frame, self.sources), frame["obs"].to_numpy()
        ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
        if ok.sum() < x.shape[1] + 1:
            raise ValueError(f"linear bias correction of {'+'.join(self.sources)}: {int(ok.sum())} training rows "
                             f"with every input, need at least {x.shape[1] + 1}")
        self.coef = np.linalg.lstsq(x[ok], y[ok], rcond=None)[0]
        if self.fallback is not None:
            self.fallback.fit(frame)
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        x = _design(frame, self.sources)
        out = x @ self.coef
        missing = ~np.isfinite(out)
        if missing.any() and self.fallback is not None:
            out[missing] = self.fallback.predict(frame.loc[missing])
        return np.maximum(out, 0.0)


@dataclass
class QuantileMapping:
    """Empirical quantile mapping of one source onto station ET, per season (all seasons when thin)."""

    source: str
    fallback: object | None = None
    quantiles: int = 101
    maps: dict = field(default_factory=dict)

    def _map(self, src: np.ndarray, obs: np.ndarray):
        ok = np.isfinite(src) & np.isfinite(obs)
        if ok.sum() < 50:
            return None
        q = np.linspace(0, 1, self.quantiles)
        return np.quantile(src[ok], q), np.quantile(obs[ok], q)

    def fit(self, frame: pd.DataFrame) -> "QuantileMapping":
        src, obs = frame[SOURCE_COLUMN[self.source]].to_numpy(), frame["obs"].to_numpy()
        self.maps = {"all": self._map(src, obs)}
        if self.maps["all"] is None:
            raise ValueError(f"quantile mapping of {self.source}: fewer than 50 training rows with both values")
        for season, part in frame.groupby("season"):
            self.maps[season] = self._map(part[SOURCE_COLUMN[self.source]].to_numpy(), part["obs"].to_numpy())
        if self.fallback is not None:
            self.fallback.fit(frame)
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        src = frame[SOURCE_COLUMN[self.source]].to_numpy()
        out = np.full(len(frame), np.nan)
        seasons = frame["season"].to_numpy()
        for season in np.unique(seasons):
            xq, yq = self.maps.get(season) or self.maps["all"]
            rows = seasons == season
            out[rows] = np.interp(src[rows], xq, yq)
        out[~np.isfinite(src)] = np.nan
        missing = ~np.isfinite(out)
        if missing.any() and self.fallback is not None:
            out[missing] = self.fallback.predict(frame.loc[missing])
        return np.maximum(out, 0.0)


def hgb_columns(frame: pd.DataFrame) -> list[str]:
    """The per-cell features of the model, their lags and the 7-day means present in ``frame``."""
    lagged = [c for c in frame.columns if any(c.startswith(f"{name}_lag") for name in LAGGED)]
    return list(FEATURES) + lagged + ["gleam_et_mean7", "era5land_et_mean7"]


@dataclass
class GradientBoosting:
    """``HistGradientBoostingRegressor`` on the per-cell features plus lags (NaN handled natively)."""

    seed: int = 0
    max_iter: int = 300
    model: object | None = None

    def fit(self, frame: pd.DataFrame) -> "GradientBoosting":
        from sklearn.ensemble import HistGradientBoostingRegressor
        ok = np.isfinite(frame["obs"].to_numpy())
        self.model = HistGradientBoostingRegressor(max_iter=self.max_iter, learning_rate=0.05, max_leaf_nodes=31,
                                                   min_samples_leaf=40, l2_regularization=1.0,
                                                   early_stopping=True, validation_fraction=0.1,
                                                   n_iter_no_change=20, random_state=self.seed)
        self.model.fit(frame.loc[ok, hgb_columns(frame)].to_numpy(), frame["obs"].to_numpy()[ok])
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.maximum(self.model.predict(frame[hgb_columns(frame)].to_numpy()), 0.0)


def baselines(seed: int = 0) -> dict[str, object]:
    """Fresh, unfitted baselines by name (each fitted per fold)."""
    era5 = lambda: LinearBias(("era5land",), fallback=Climatology())  # noqa: E731
    return {
        "climatology": Climatology(),
        "linear_gleam": LinearBias(("gleam",), fallback=Climatology()),
        "linear_era5land": era5(),
        "linear_both": LinearBias(("gleam", "era5land"), fallback=era5()),
        "qmap_gleam": QuantileMapping("gleam", fallback=Climatology()),
        "qmap_era5land": QuantileMapping("era5land", fallback=Climatology()),
        "hgb": GradientBoosting(seed=seed),
    }
