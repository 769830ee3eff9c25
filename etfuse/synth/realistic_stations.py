"""Station observations of the realistic world: what a CMA pan station reports, not the truth.

A station sees a point, not its 0.01 deg cell: a persistent local factor and autocorrelated local
noise (representativeness).  It reports pan evaporation, and the pan-to-ET coefficient that would
turn the reading back into the point's ET differs per station and season (``k_true``) and is not
the coefficient the reader is configured with, so after the reader's conversion the stations are
biased per station and season, as real pan-derived "ET" is.  Multi-day gaps, random missing days,
the frozen season of the large pan and a few outliers complete the picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Pan readings are clipped below the quality suite's largest plausible pan value [mm day-1].
PAN_MAX_MM = 29.5


@dataclass(frozen=True)
class StationErrors:
    """Knobs of the station observation model (all per day unless said)."""

    #: log-spread of the station's own pan coefficient around the configured one [1]
    pan_coefficient_sd: float = 0.2
    #: largest amplitude of a station's seasonal cycle of the pan coefficient (each draws U(0.05, this)) [1]
    pan_coefficient_season_amplitude: float = 0.25
    #: log-spread of the station's persistent point/cell ratio (representativeness) [1]
    representativeness_sd: float = 0.2
    #: spread of the local day-to-day noise at 1 mm day-1 of ET, AR(1) with ``local_noise_rho`` [mm day-1]
    local_noise_sd: float = 0.4
    local_noise_rho: float = 0.6
    #: relative reading noise of a pan [1]
    reading_noise: float = 0.05
    #: chance per station-day that a multi-day gap starts [1]
    gap_start_probability: float = 0.006
    #: mean length of a gap [days]
    gap_mean_days: float = 15.0
    #: share of isolated missing station-days [1]
    missing_fraction: float = 0.02
    #: share of readings multiplied by U(2, 3.5) (a slipped decimal, a refilled pan) [1]
    outlier_fraction: float = 0.003
    #: months in which the large E601B pan is frozen and not read (the small pan is) [month numbers]
    large_pan_frozen_months: tuple[int, ...] = (11, 12, 1, 2, 3)


class StationObserver:
    """Draws each station's hidden pan coefficients and representativeness once, then observes days."""

    def __init__(self, stations: pd.DataFrame, errors: StationErrors, k_large: float, k_small: float,
                 rng: np.random.Generator) -> None:
        self.stations, self.errors, self.rng = stations, errors, rng
        self.k_configured = {"large": k_large, "small": k_small}
        n = len(stations)
        own = np.exp(errors.pan_coefficient_sd * rng.standard_normal(n))
        amplitude = rng.uniform(0.05, max(errors.pan_coefficient_season_amplitude, 0.05), n)
        phase = rng.uniform(0, 12, n)
        months = np.arange(1, 13)
        cycle = 1 + amplitude[:, None] * np.cos(2 * np.pi * (months[None, :] - phase[:, None]) / 12.0)
        small_own = own * np.exp(0.05 * rng.standard_normal(n))
        #: hidden coefficients [station, month-1]: ET = k_true * pan
        self.k_true = {"large": k_large * own[:, None] * cycle, "small": k_small * small_own[:, None] * cycle}
        self.representativeness = np.exp(errors.representativeness_sd * rng.standard_normal(n)
                                         - 0.5 * errors.representativeness_sd ** 2)
        self.local = np.zeros(n)
        self.in_gap = np.zeros(n, dtype=bool)

    def coefficient_table(self) -> pd.DataFrame:
        """The hidden coefficients in the reader's ``coefficient_file`` layout (station_id,month,pan,coefficient)."""
        parts = []
        for pan, k in self.k_true.items():
            for i, sid in enumerate(self.stations["station_id"]):
                parts.append(pd.DataFrame({"station_id": sid, "month": np.arange(1, 13), "pan": pan,
                                           "coefficient": np.round(k[i], 4)}))
        return pd.concat(parts, ignore_index=True)

    def observe(self, day: pd.Timestamp, truth_cell: np.ndarray) -> list[dict]:
        """One day's rows: truth at the cell, the point's ET, both pan readings and the reader's ET."""
        e, rng, n = self.errors, self.rng, len(self.stations)
        self.local = e.local_noise_rho * self.local + np.sqrt(1 - e.local_noise_rho ** 2) * rng.standard_normal(n)
        point = np.clip(truth_cell * self.representativeness
                        + e.local_noise_sd * self.local * (0.5 + 0.5 * np.sqrt(np.clip(truth_cell, 0, None))), 0.0, None)
        starts = rng.random(n) < e.gap_start_probability
        ends = rng.random(n) < 1.0 / max(e.gap_mean_days, 1.0)
        self.in_gap = np.where(self.in_gap, ~ends, starts)
        missing = self.in_gap | (rng.random(n) < e.missing_fraction)
        outlier = rng.random(n) < e.outlier_fraction
        outlier_factor = np.where(outlier, rng.uniform(2.0, 3.5, n), 1.0)
        m = day.month - 1
        pans = {}
        for pan in ("large", "small"):
            reading = point / self.k_true[pan][:, m] * (1 + e.reading_noise * rng.standard_normal(n)) * outlier_factor
            pans[pan] = np.where(missing, np.nan, np.clip(reading, 0.0, PAN_MAX_MM))
        if day.month in e.large_pan_frozen_months:
            pans["large"] = np.full(n, np.nan)
        use_large = ~np.isnan(pans["large"])
        reader_et = np.where(use_large, pans["large"] * self.k_configured["large"],
                             pans["small"] * self.k_configured["small"])
        k_used = np.where(use_large, self.k_true["large"][:, m], self.k_true["small"][:, m])
        rows = []
        for i, st in enumerate(self.stations.itertuples()):
            rows.append({"station_id": st.station_id, "lat": st.lat, "lon": st.lon, "elevation_m": st.elevation_m,
                         "date": day, "et_truth_mm": float(truth_cell[i]), "et_point_mm": float(point[i]),
                         "et_obs_mm": float(reader_et[i]), "pan_large_mm": float(pans["large"][i]),
                         "pan_small_mm": float(pans["small"][i]),
                         "pan_coefficient_true": float(k_used[i]) if np.isfinite(reader_et[i]) else np.nan,
                         "outlier": bool(outlier[i] and np.isfinite(reader_et[i]))})
        return rows
