"""Shared machinery of the synthetic worlds: provider lattices, block means and smooth random fields.

Both the fast default world (``etfuse.synth.world``) and the realistic one
(``etfuse.synth.realistic``) draw their weather and errors from these, so a field with the same
seed and the same call order is the same in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import ndimage

GLEAM_RES = 0.25
ERA5_RES = 0.1
LAMBDA_MJ_PER_KG = 2.45


@dataclass
class Lattice:
    """A regular lat/lon lattice aligned to multiples of ``res`` (as the providers' grids are)."""

    lat: np.ndarray
    lon: np.ndarray
    res: float

    @classmethod
    def covering(cls, bbox: tuple[float, float, float, float], res: float, centred_on_multiples: bool) -> "Lattice":
        w, s, e, n = bbox
        if centred_on_multiples:   # ERA5-Land: centres at k * 0.1
            lat = np.arange(np.ceil(n / res) * res, np.floor(s / res) * res - res / 2, -res)
            lon = np.arange(np.floor(w / res) * res, np.ceil(e / res) * res + res / 2, res)
        else:                      # GLEAM: edges at k * 0.25, centres in between
            lat = np.arange(np.ceil(n / res) * res - res / 2, np.floor(s / res) * res, -res)
            lon = np.arange(np.floor(w / res) * res + res / 2, np.ceil(e / res) * res, res)
        return cls(np.round(lat, 6), np.round(lon, 6), res)

    def labels(self, fine_lat: np.ndarray, fine_lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row/column of the lattice cell holding each fine centre."""
        rows = np.clip(np.round((self.lat[0] - fine_lat) / self.res).astype(int), 0, self.lat.size - 1)
        cols = np.clip(np.round((fine_lon - self.lon[0]) / self.res).astype(int), 0, self.lon.size - 1)
        return rows, cols


class BlockMean:
    """Mean of fine cells per coarse cell, by bincount (fast enough for the whole province)."""

    def __init__(self, lattice: Lattice, fine_lat: np.ndarray, fine_lon: np.ndarray) -> None:
        rows, cols = lattice.labels(fine_lat, fine_lon)
        self.shape = (lattice.lat.size, lattice.lon.size)
        self.label = (rows[:, None] * self.shape[1] + cols[None, :]).ravel()
        self.count = np.bincount(self.label, minlength=self.shape[0] * self.shape[1]).astype(np.float64)

    def __call__(self, field: np.ndarray) -> np.ndarray:
        total = np.bincount(self.label, weights=field.ravel(), minlength=self.count.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (total / self.count).reshape(self.shape).astype(np.float32)


@lru_cache(maxsize=64)
def _filter_norm(sigma: float) -> float:
    """L2 norm of the Gaussian filter of ``sigma`` cells (the spread it leaves of unit white noise)."""
    pad = int(np.ceil(3 * sigma))
    impulse = np.zeros((2 * pad + 1, 2 * pad + 1))
    impulse[pad, pad] = 1.0
    return float(np.sqrt((ndimage.gaussian_filter(impulse, sigma, mode="constant") ** 2).sum()))


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma_cells: float) -> np.ndarray:
    """A unit-variance Gaussian random field with correlation length ``sigma_cells``.

    White noise is filtered on a padded domain and scaled by the filter's own norm (not by the
    sample's spread), so a small domain gets the same statistics as a large one: on a domain
    smaller than the correlation length the field is close to one random value, as it should be.
    """
    sigma = max(float(sigma_cells), 0.5)
    pad = int(np.ceil(3 * sigma))
    norm = _filter_norm(sigma)
    white = rng.standard_normal((shape[0] + 2 * pad, shape[1] + 2 * pad))
    field = ndimage.gaussian_filter(white, sigma, mode="wrap")[pad:pad + shape[0], pad:pad + shape[1]]
    return (field / norm).astype(np.float32)


class SmoothNoise:
    """Unit-variance smooth random fields with a spatial scale and an AR(1) memory."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int], cell_deg: float, scale_deg: float,
                 rho: float) -> None:
        self.rng, self.shape, self.rho = rng, shape, rho
        self.sigma = scale_deg / cell_deg / 2.0
        self.state = smooth_field(rng, shape, self.sigma)

    def step(self) -> np.ndarray:
        fresh = smooth_field(self.rng, self.shape, self.sigma)
        self.state = (self.rho * self.state + np.sqrt(1 - self.rho ** 2) * fresh).astype(np.float32)
        return self.state


def season_of(day: pd.Timestamp) -> float:
    """0 in winter, 1 at the end of July: the growing-season shape of Qinghai grassland ET."""
    return float(max(0.0, np.sin(2 * np.pi * (day.day_of_year - 110) / 365.0)) ** 1.3)


def insolation_of(day: pd.Timestamp) -> float:
    """0..1 annual cycle of clear-sky radiation (peak at the June solstice)."""
    return 0.5 + 0.5 * np.sin(2 * np.pi * (day.day_of_year - 80) / 365.0)


def cumulative_profile(kind: str) -> np.ndarray:
    """Share of a day's accumulation reached at 01..24 UTC (Qinghai solar noon is about 05:20 UTC)."""
    hours = np.arange(24) + 0.5
    if kind == "solar":
        w = np.clip(np.cos(2 * np.pi * (hours - 5.3) / 24.0), 0, None) ** 1.5
    else:
        w = np.ones(24)
    return np.cumsum(w) / w.sum()
