"""The water side of the realistic synthetic world: patchy storms, snow, a soil bucket, water stress.

Pure functions on arrays, so the truth and each product can run the same physics with their own
inputs (their own precipitation, forcing and bucket size), which is what makes the products'
errors realistic: they are errors of a model run, with memory, not noise added to the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from etfuse.synth.fields import LAMBDA_MJ_PER_KG

#: Air temperature below which precipitation falls as snow [K].
SNOW_THRESHOLD_K = 272.15
#: Snow melts at this rate per kelvin above freezing [mm day-1 K-1] (a degree-day factor).
DEGREE_DAY_MM_PER_K = 3.0


@dataclass
class Bucket:
    """Soil water [mm] in a bucket of ``capacity_mm`` per cell, and a snowpack [mm water equivalent]."""

    water_mm: np.ndarray
    snow_mm: np.ndarray
    capacity_mm: np.ndarray

    @classmethod
    def half_full(cls, capacity_mm: np.ndarray) -> "Bucket":
        cap = np.asarray(capacity_mm, dtype=np.float32)
        return cls(0.5 * cap, np.zeros_like(cap), cap)

    def relative(self) -> np.ndarray:
        """Relative soil moisture [0-1]."""
        return self.water_mm / self.capacity_mm


def storm_precipitation(z_storm: np.ndarray, z_intensity: np.ndarray, climatology_mm: np.ndarray,
                        wet_fraction: float, intensity_sd: float) -> np.ndarray:
    """Patchy daily precipitation [mm day-1] whose long-run mean is ``climatology_mm``.

    A cell rains where the unit-normal, spatially smooth ``z_storm`` exceeds the quantile that
    leaves ``wet_fraction`` of cells wet, so storms come as clustered cells, not as drizzle
    everywhere.  Wet-day amounts are ``climatology / wet_fraction`` times a log-normal factor of
    mean 1 (``z_intensity`` unit normal, log-spread ``intensity_sd``), and grow towards a storm's core.
    """
    wet_fraction = float(np.clip(wet_fraction, 1e-3, 0.999))
    threshold = float(ndtri(1.0 - wet_fraction))
    excess = np.clip(z_storm - threshold, 0.0, None)
    wet = excess > 0
    core = 0.6 + 0.8 * np.clip(excess, 0.0, 1.0)                 # mean about 1 over wet cells
    factor = np.exp(intensity_sd * z_intensity - 0.5 * intensity_sd ** 2)
    return np.where(wet, climatology_mm / wet_fraction * factor * core, 0.0).astype(np.float32)


def water_stress(relative_moisture: np.ndarray, wilting: float, critical: float, exponent: float) -> np.ndarray:
    """Non-linear stress factor [0-1]: 0 below ``wilting``, 1 above ``critical``, a power curve between."""
    x = np.clip((relative_moisture - wilting) / (critical - wilting), 0.0, 1.0)
    return (x ** exponent).astype(np.float32)


def frost_factor(t_k: np.ndarray) -> np.ndarray:
    """Share of the growing-season transpiration possible at daily-mean temperature ``t_k`` [K]."""
    return np.clip((t_k - 266.0) / 12.0, 0.0, 1.0).astype(np.float32)


def step_bucket(bucket: Bucket, precip_mm: np.ndarray, rn_mj: np.ndarray, t_k: np.ndarray, vegetation: np.ndarray,
                *, wilting: float, critical: float, exponent: float, alpha: float) -> np.ndarray:
    """Advance ``bucket`` by one day in place and return the day's actual ET [mm day-1].

    Snow accumulates below ``SNOW_THRESHOLD_K`` and melts by degree-days; rain and melt fill the
    bucket, the excess runs off.  Potential ET is Priestley-Taylor-like, ``alpha * Rn / lambda``
    (``rn_mj`` [MJ m-2 day-1]); actual ET = potential x vegetation x frost x stress(moisture),
    never more than the water in the bucket, plus sublimation/soil evaporation of 5 % of the
    radiation-equivalent (what keeps winter ET above zero on the plateau).
    """
    cold = t_k < SNOW_THRESHOLD_K
    bucket.snow_mm = bucket.snow_mm + np.where(cold, precip_mm, 0.0)
    melt = np.minimum(bucket.snow_mm, DEGREE_DAY_MM_PER_K * np.clip(t_k - 273.15, 0.0, None))
    bucket.snow_mm = bucket.snow_mm - melt
    water = np.minimum(bucket.water_mm + np.where(cold, 0.0, precip_mm) + melt, bucket.capacity_mm)
    rn_pos = np.clip(rn_mj, 0.0, None)
    potential = alpha * rn_pos / LAMBDA_MJ_PER_KG
    stress = water_stress(water / bucket.capacity_mm, wilting, critical, exponent)
    transpiration = np.minimum(potential * vegetation * frost_factor(t_k) * stress, water)
    bucket.water_mm = (water - transpiration).astype(np.float32)
    bucket.snow_mm = bucket.snow_mm.astype(np.float32)
    return (transpiration + 0.05 * rn_pos / LAMBDA_MJ_PER_KG).astype(np.float32)
