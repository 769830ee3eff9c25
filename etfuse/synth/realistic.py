"""The realistic synthetic world (``etfuse synth --profile realistic``): hard in the ways the real one is.

The fast default world (``etfuse.synth.world``) is easy: its sources are the truth plus independent
noise, its covariates are the truth's exact drivers and its stations are unbiased.  This world keeps
the default's grids, writers and file layouts, and changes what is behind them
(docs/synthetic-worlds.md lists every knob):

* truth: a daily soil bucket per fine cell, filled by patchy, spatially clustered storms (and
  snowmelt), emptied by ET = potential(Rn) x vegetation x frost(T) x non-linear stress(moisture);
  one drought year (less rain over the growing season, a little warmer and sunnier);
* GLEAM-like and ERA5-Land-like products each run their own bucket from their own biased
  precipitation (gain smooth over space, daily misplaced storms), a different stress curve and
  bucket size, and see radiation and temperature through a forcing error SHARED by both (smooth
  over ~``forcing_scale_deg``, AR(1) over days), then a product gain, offset and seasonality that
  vary over space, at their native 0.25 / 0.1 deg;
* covariates: ERA5-Land net radiation and skin temperature carry the shared forcing error plus
  their own correlated errors; MODIS LST has its own bias and noise, per-pixel clouds that follow
  the storms, and no file before ``modis_first_day`` (Terra's first MOD11A1 day, 2000-02-24);
* stations: pan readings with hidden per-station, per-season coefficients, representativeness
  error, multi-day gaps, a frozen large pan in winter and a few outliers
  (``etfuse.synth.realistic_stations``).

Truth outputs as the default world (``truth/et_truth_<YYYY>.nc``, ``truth/stations_truth.csv``,
``truth/capacity.nc``) plus ``truth/regimes.csv`` (per day: drought, MODIS era, season) and
``truth/pan_coefficients.csv`` (the hidden coefficients, in the reader's coefficient-file layout).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from etfuse.synth.fields import Lattice, SmoothNoise, insolation_of, season_of, smooth_field
from etfuse.synth.hydrology import Bucket, step_bucket, storm_precipitation
from etfuse.synth.realistic_stations import StationErrors, StationObserver
from etfuse.synth.world import World, WorldSpec
from etfuse.synth.writers_stations import cma_evp_file_name, write_cma_evp_month

#: Terra's first MOD11A1 day: no MODIS file exists before it.
MODIS_FIRST_DAY = "2000-02-24"


@dataclass(frozen=True)
class ProductModel:
    """How one product (GLEAM-like or ERA5-Land-like) turns its own inputs into its ET."""

    #: mean multiplicative bias of the product's precipitation [1]
    precip_gain: float
    #: spatial spread of that gain, smooth over ``spatial_scale_deg`` [1]
    precip_gain_sd: float
    #: log-spread of the daily precipitation error (misplaced and missed storms) [1]
    precip_noise_sd: float
    #: the product's soil capacity relative to the truth's [1]
    bucket_factor: float
    #: exponent of the product's stress curve (the truth's is ``RealisticSpec.stress_exponent``) [1]
    stress_exponent: float
    #: mean ET gain and its spatial spread [1]
    et_gain: float
    et_gain_sd: float
    #: mean ET offset and its spatial spread [mm day-1]
    offset_mm: float
    offset_sd_mm: float
    #: growing-season ET added at the season's peak (x 0..1 season shape), and its spread [mm day-1]
    seasonal_mm: float
    seasonal_sd_mm: float
    #: random error: spread [mm day-1], spatial scale [degrees], day-to-day AR(1) coefficient [1]
    noise_sd_mm: float
    noise_scale_deg: float
    noise_rho: float
    #: spatial scale of the product's gain/offset/seasonality fields [degrees]
    spatial_scale_deg: float = 2.0
    #: products report no more than this [mm day-1]
    max_mm: float = 12.0


#: GLEAM v3.7a-like: drier precipitation (MSWEP-like), a bigger root zone, gentle stress.
GLEAM_MODEL = ProductModel(precip_gain=0.85, precip_gain_sd=0.2, precip_noise_sd=0.5, bucket_factor=1.4,
                           stress_exponent=1.0, et_gain=1.3, et_gain_sd=0.2, offset_mm=0.3, offset_sd_mm=0.2,
                           seasonal_mm=0.5, seasonal_sd_mm=0.3, noise_sd_mm=0.45, noise_scale_deg=0.75, noise_rho=0.5)
#: ERA5-Land-like: wet precipitation bias over the plateau, a shallower bucket, sharper stress.
ERA5LAND_MODEL = ProductModel(precip_gain=1.35, precip_gain_sd=0.25, precip_noise_sd=0.4, bucket_factor=0.8,
                              stress_exponent=2.5, et_gain=1.45, et_gain_sd=0.2, offset_mm=0.1, offset_sd_mm=0.15,
                              seasonal_mm=0.3, seasonal_sd_mm=0.3, noise_sd_mm=0.35, noise_scale_deg=0.4,
                              noise_rho=0.5)


@dataclass(frozen=True)
class RealisticSpec(WorldSpec):
    """The realistic world's knobs on top of ``WorldSpec`` (whose ``gleam``/``era5land``/
    ``station_noise_sd`` apply to the fast world only; ``station_missing_fraction`` is replaced by
    ``stations.missing_fraction``)."""

    #: annual precipitation in the driest and the wettest cells (north-west to south-east) [mm yr-1]
    precip_annual_min_mm: float = 60.0
    precip_annual_max_mm: float = 650.0
    #: spatial scale of storm cells [degrees] and the day-to-day persistence of storms [1]
    storm_scale_deg: float = 0.4
    storm_rho: float = 0.3
    #: share of cells wet on a winter day and on a peak-summer day [1]
    wet_fraction_winter: float = 0.08
    wet_fraction_summer: float = 0.4
    #: log-spread of wet-day precipitation amounts [1]
    storm_intensity_sd: float = 0.8
    #: soil bucket capacity in the driest and the wettest cells [mm]
    soil_capacity_min_mm: float = 30.0
    soil_capacity_max_mm: float = 160.0
    #: stress curve of the truth: no ET below ``wilting``, none lost above ``critical`` (relative
    #: moisture [1]), a power curve of ``stress_exponent`` between
    wilting: float = 0.1
    critical: float = 0.65
    stress_exponent: float = 1.6
    #: Priestley-Taylor-like coefficient of potential ET [1]
    alpha: float = 1.0
    #: the drought year (None: the first calendar year whose drought months lie inside the period) [year]
    drought_year: int | None = None
    #: months of the drought, its precipitation factor [1] and warm anomaly [K]
    drought_months: tuple[int, ...] = (5, 6, 7, 8, 9)
    drought_precip_factor: float = 0.3
    drought_warming_k: float = 1.0
    #: forcing error shared by GLEAM and ERA5-Land: relative radiation error [1], temperature error
    #: [K], spatial scale [degrees; 1 deg ~ 100 km] and day-to-day AR(1) coefficient [1]
    forcing_rn_sd: float = 0.12
    forcing_t_sd_k: float = 1.5
    forcing_scale_deg: float = 1.0
    forcing_rho: float = 0.75
    #: ERA5-Land's own net radiation error (relative) [1] and skin temperature bias and error [K],
    #: both smooth over ``covariate_scale_deg`` with AR(1) ``covariate_rho``
    covariate_rn_sd: float = 0.08
    covariate_skt_bias_k: float = 0.8
    covariate_skt_sd_k: float = 1.2
    covariate_scale_deg: float = 0.5
    covariate_rho: float = 0.6
    #: MODIS LST: static bias spread, correlated error (scale 0.3 deg) and pixel noise [K]
    lst_bias_sd_k: float = 1.5
    lst_sd_k: float = 1.2
    lst_pixel_sd_k: float = 0.7
    #: spatial scale of cloud systems [degrees] and weight of per-pixel fragmentation [1]
    cloud_scale_deg: float = 0.25
    cloud_fragmentation: float = 0.6
    #: first day with a MODIS file (YYYY-MM-DD)
    modis_first_day: str = MODIS_FIRST_DAY
    gleam_model: ProductModel = GLEAM_MODEL
    era5land_model: ProductModel = ERA5LAND_MODEL
    stations: StationErrors = field(default_factory=StationErrors)

    def resolved_drought_year(self) -> int | None:
        if self.drought_year is not None:
            return self.drought_year
        first, last = pd.Timestamp(self.start), pd.Timestamp(self.end)
        m0, m1 = min(self.drought_months), max(self.drought_months)
        for year in range(first.year, last.year + 1):
            if first <= pd.Timestamp(year, m0, 1) and pd.Timestamp(year, m1, 1) + pd.offsets.MonthEnd(0) <= last:
                return year
        return None

    def is_drought_day(self, day: pd.Timestamp) -> bool:
        """Whether ``day`` lies in the drought (the resolved drought year's drought months)."""
        year = self.resolved_drought_year()
        return year is not None and day.year == year and day.month in self.drought_months


def _climatology_norm() -> float:
    """Mean over a year of the precipitation season weight, so weights average to 1."""
    days = pd.date_range("2001-01-01", "2001-12-31")
    return float(np.mean([0.1 + season_of(d) for d in days]))


class _Product:
    """One product's hidden state: its bucket, precipitation gain and ET error fields."""

    def __init__(self, model: ProductModel, world: "RealisticWorld", lattice: Lattice, capacity_mm: np.ndarray) -> None:
        rng, wshape = world.rng, world.wshape
        self.model = model
        sigma = model.spatial_scale_deg / 0.05 / 2.0
        self.precip_gain = world.on_fine(np.clip(model.precip_gain + model.precip_gain_sd * smooth_field(rng, wshape, sigma),
                                              0.2, None))
        self.precip_noise = SmoothNoise(rng, wshape, 0.05, 0.5, 0.2)
        wobble = np.exp(0.15 * world.on_fine(smooth_field(rng, wshape, sigma)))
        self.bucket = Bucket.half_full(capacity_mm * model.bucket_factor * wobble)
        shape = (lattice.lat.size, lattice.lon.size)
        lsigma = model.spatial_scale_deg / lattice.res / 2.0
        self.gain = np.clip(model.et_gain + model.et_gain_sd * smooth_field(rng, shape, lsigma), 0.3, None)
        self.offset = model.offset_mm + model.offset_sd_mm * smooth_field(rng, shape, lsigma)
        self.seasonal = model.seasonal_mm + model.seasonal_sd_mm * smooth_field(rng, shape, lsigma)
        self.noise = SmoothNoise(rng, shape, lattice.res, model.noise_scale_deg, model.noise_rho)

    def simulate(self, precip: np.ndarray, rn: np.ndarray, t_k: np.ndarray, vegetation: np.ndarray,
                 spec: RealisticSpec, fine: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """The product's model ET on the fine grid [mm day-1] from its own precipitation and the forcing."""
        sd = self.model.precip_noise_sd
        own_precip = precip * self.precip_gain * np.exp(sd * fine(self.precip_noise.step()) - 0.5 * sd ** 2)
        return step_bucket(self.bucket, own_precip, rn, t_k, vegetation, wilting=spec.wilting,
                           critical=spec.critical, exponent=self.model.stress_exponent, alpha=spec.alpha)

    def observe(self, model_et_coarse: np.ndarray, season: float) -> np.ndarray:
        value = (self.gain * model_et_coarse + self.offset + self.seasonal * season
                 + self.model.noise_sd_mm * self.noise.step())
        return np.clip(value, 0.0, self.model.max_mm).astype(np.float32)


class RealisticWorld(World):
    """The realistic generator; same ``run(out)`` and file layout as ``World``."""

    spec: RealisticSpec

    def __init__(self, spec: RealisticSpec) -> None:
        super().__init__(spec)
        rng = self.rng
        self.wshape = (self.weather_lattice.lat.size, self.weather_lattice.lon.size)
        cell = 0.05
        self.storm = SmoothNoise(rng, self.wshape, cell, spec.storm_scale_deg, spec.storm_rho)
        self.intensity = SmoothNoise(rng, self.wshape, cell, 0.3, 0.0)
        self.forcing_rn = SmoothNoise(rng, self.wshape, cell, spec.forcing_scale_deg, spec.forcing_rho)
        self.forcing_t = SmoothNoise(rng, self.wshape, cell, spec.forcing_scale_deg, spec.forcing_rho)
        self.cloud_noise = SmoothNoise(rng, self.wshape, cell, spec.cloud_scale_deg, 0.3)
        self.lst_noise = SmoothNoise(rng, self.wshape, cell, 0.3, 0.5)
        eshape = (self.era5_lattice.lat.size, self.era5_lattice.lon.size)
        self.cov_rn = SmoothNoise(rng, eshape, 0.1, spec.covariate_scale_deg, spec.covariate_rho)
        self.cov_skt = SmoothNoise(rng, eshape, 0.1, spec.covariate_scale_deg, spec.covariate_rho)
        wet = (self.capacity - 0.1) / 0.9
        self.precip_annual = (spec.precip_annual_min_mm
                              + (spec.precip_annual_max_mm - spec.precip_annual_min_mm) * wet).astype(np.float32)
        soil = spec.soil_capacity_min_mm + (spec.soil_capacity_max_mm - spec.soil_capacity_min_mm) * wet
        self.soil_capacity = (soil * np.exp(0.2 * self.fine_field(0.3))).astype(np.float32)
        self.vegetation = (0.3 + 0.7 * self.capacity).astype(np.float32)
        self.lst_bias = (spec.lst_bias_sd_k * self.fine_field(0.5)).astype(np.float32)
        self.truth_bucket = Bucket.half_full(self.soil_capacity)
        self.gleam_product = _Product(spec.gleam_model, self, self.gleam_lattice, self.soil_capacity)
        self.era5_product = _Product(spec.era5land_model, self, self.era5_lattice, self.soil_capacity)
        self.observer = StationObserver(self.stations, spec.stations, spec.pan_coefficient_large,
                                        spec.pan_coefficient_small, rng)
        self.climatology_norm = _climatology_norm()
        self.drought_year = spec.resolved_drought_year()
        self.modis_first = pd.Timestamp(spec.modis_first_day)

    def on_fine(self, weather_field: np.ndarray) -> np.ndarray:
        """A field on the 0.05 deg weather lattice, interpolated to the fine grid."""
        return self.to_fine.apply(weather_field)

    def fine_field(self, scale_deg: float) -> np.ndarray:
        """A static unit-variance smooth field on the fine grid with correlation length ``scale_deg``."""
        return self.on_fine(smooth_field(self.rng, self.wshape, scale_deg / 0.05 / 2.0))

    def in_drought(self, day: pd.Timestamp) -> bool:
        return self.drought_year is not None and day.year == self.drought_year and day.month in self.spec.drought_months

    # ------------------------------------------------------------------ one day
    def _day(self, day: pd.Timestamp) -> dict[str, np.ndarray]:
        spec = self.spec
        season, insolation = season_of(day), insolation_of(day)
        drought = self.in_drought(day)
        z_storm = self.on_fine(self.storm.step())
        z_intensity = self.on_fine(self.intensity.step())
        rn_anom = self.on_fine(self.noise["rn"].step())
        temp_anom = self.on_fine(self.noise["temp"].step())
        cloudiness = 1.0 / (1.0 + np.exp(-1.5 * z_storm))                     # 0..1, high under storms
        rn = np.clip((1.0 + 15.5 * insolation) * (1.0 - 0.35 * cloudiness) + 1.2 * rn_anom, 0.2, None)
        t_mean = (273.15 - 9.0 + 22.0 * insolation_of(day - pd.Timedelta(days=25))
                  - 0.0065 * (self.elevation - 3000.0) + 3.0 * temp_anom)
        wet_fraction = spec.wet_fraction_winter + (spec.wet_fraction_summer - spec.wet_fraction_winter) * season
        climatology = self.precip_annual / 365.0 * (0.1 + season) / self.climatology_norm
        precip = storm_precipitation(z_storm, z_intensity, climatology, wet_fraction, spec.storm_intensity_sd)
        if drought:
            precip = precip * np.float32(spec.drought_precip_factor)
            rn = rn * np.float32(1.05)
            t_mean = t_mean + np.float32(spec.drought_warming_k)
        rn, t_mean = rn.astype(np.float32), t_mean.astype(np.float32)
        et = step_bucket(self.truth_bucket, precip, rn, t_mean, self.vegetation, wilting=spec.wilting,
                         critical=spec.critical, exponent=spec.stress_exponent, alpha=spec.alpha)
        # the forcing GLEAM and ERA5-Land share (ERA5 radiation and temperature), with one error
        rn_forced = (rn * (1.0 + spec.forcing_rn_sd * self.on_fine(self.forcing_rn.step()))).astype(np.float32)
        t_forced = (t_mean + spec.forcing_t_sd_k * self.on_fine(self.forcing_t.step())).astype(np.float32)
        et_gleam = self.gleam_product.simulate(precip, rn_forced, t_forced, self.vegetation, spec, self.on_fine)
        et_era5 = self.era5_product.simulate(precip, rn_forced, t_forced, self.vegetation, spec, self.on_fine)
        diurnal_k = (4.0 + 6.0 * (1.0 - cloudiness)).astype(np.float32)
        cloud_score = (0.7 * z_storm + 0.7 * self.on_fine(self.cloud_noise.step())
                       + spec.cloud_fragmentation * self.rng.standard_normal(z_storm.shape).astype(np.float32))
        cloudy_share = min(0.9, spec.cloud_fraction * (0.7 + 0.6 * season))
        cloud_cut = np.quantile(cloud_score, 1 - cloudy_share)
        return {"et": et, "rn": rn, "t_mean": t_mean, "diurnal_k": diurnal_k, "cloud": cloud_score >= cloud_cut,
                "season": np.float32(season), "precip": precip, "rn_forced": rn_forced, "t_forced": t_forced,
                "et_gleam_model": et_gleam, "et_era5land_model": et_era5}

    def _era5_day(self, f: dict[str, np.ndarray]) -> dict:
        spec = self.spec
        return {"et": self.era5_product.observe(self.era5_mean(f["et_era5land_model"]), float(f["season"])),
                "rn": self.era5_mean(f["rn_forced"]) * (1.0 + spec.covariate_rn_sd * self.cov_rn.step()),
                "t_mean": (self.era5_mean(f["t_forced"]) + np.float32(spec.covariate_skt_bias_k)
                           + spec.covariate_skt_sd_k * self.cov_skt.step()).astype(np.float32),
                "diurnal_k": self.era5_mean(f["diurnal_k"]), "season": f["season"]}

    def _gleam_day(self, f: dict[str, np.ndarray]) -> np.ndarray:
        return self.gleam_product.observe(self.gleam_mean(f["et_gleam_model"]), float(f["season"]))

    def _modis_lst(self, day: pd.Timestamp, f: dict[str, np.ndarray]) -> np.ndarray | None:
        if day < self.modis_first:
            self.lst_noise.step()       # keep the random sequence independent of the MODIS era
            return None
        spec = self.spec
        lst = (f["t_mean"] + f["diurnal_k"] * np.float32(np.cos(2 * np.pi * (4.0 - 7.0) / 24.0)) + self.lst_bias
               + spec.lst_sd_k * self.on_fine(self.lst_noise.step())
               + spec.lst_pixel_sd_k * self.rng.standard_normal(f["t_mean"].shape).astype(np.float32))
        return np.where(f["cloud"], np.nan, lst)

    def _station_day(self, day: pd.Timestamp, f: dict[str, np.ndarray]) -> list[dict]:
        rows, cols = self.station_cells
        return self.observer.observe(day, f["et"][rows, cols])

    def _write_cma(self, folder: Path, rows: pd.DataFrame) -> list[str]:
        """CMA EVP monthly files from the observer's pan readings (not from ET / configured coefficient)."""
        if rows.empty:
            return []
        rows = rows.copy()
        rows["date"] = pd.to_datetime(rows["date"])
        rows["qc_large"] = np.where(np.isnan(rows["pan_large_mm"]), 8, 0)
        rows["qc_small"] = np.where(np.isnan(rows["pan_small_mm"]), 8, 0)
        rows["elevation_estimated"] = False
        names = []
        for (year, month), part in rows.groupby([rows["date"].dt.year, rows["date"].dt.month]):
            name = cma_evp_file_name(year, month)
            write_cma_evp_month(folder / name, part[["station_id", "lat", "lon", "elevation_m", "elevation_estimated",
                                                     "date", "pan_small_mm", "pan_large_mm", "qc_small", "qc_large"]])
            names.append(name)
        return names

    def _finish(self, out: Path, days: pd.DatetimeIndex) -> dict:
        truth = out / "truth"
        regimes = pd.DataFrame({"date": days.strftime("%Y-%m-%d"),
                                "drought": [self.in_drought(d) for d in days],
                                "modis_available": days >= self.modis_first,
                                "season": np.round([season_of(d) for d in days], 4)})
        regimes.to_csv(truth / "regimes.csv", index=False)
        self.observer.coefficient_table().to_csv(truth / "pan_coefficients.csv", index=False)
        return {"profile": "realistic", "drought_year": self.drought_year,
                "drought_months": list(self.spec.drought_months), "modis_first_day": self.spec.modis_first_day,
                "regimes": "truth/regimes.csv", "pan_coefficients": "truth/pan_coefficients.csv"}


def generate_realistic(out: Path, spec: RealisticSpec, progress: Callable[[int, int], None] | None = None) -> dict:
    """Write a realistic synthetic world for ``spec`` under ``out`` (landing/, truth/, static/, manifest.json)."""
    return RealisticWorld(spec).run(Path(out), progress)
