"""The fast synthetic world (default profile): daily truth ET and the provider files derived from it.

No provider archive is reachable here, so tests and the demo run on this world
(docs/architecture.md, "The synthetic world").

The truth lives on a fine grid (the target resolution) over the region plus a margin:

* static fields: elevation [m] interpolated from the real station elevations plus relief, and a
  vegetation/moisture capacity in [0.1, 1] (dry north-west, wetter south-east);
* weather: spatially smooth anomalies, autocorrelated in time, for net radiation, temperature and
  soil moisture, on a coarse lattice and interpolated to the fine grid;
* ``et_truth = capacity * moisture * frost(T) * 0.7 * Rn / lambda`` (a Priestley-Taylor-like form)
  [mm day-1], with ``Rn`` [MJ m-2 day-1] and lambda = 2.45 MJ kg-1.

Each source sees the truth through its own resolution, bias and noise (magnitudes chosen so that,
against stations, GLEAM's RMSE is about 3.5 mm/d and ERA5-Land's about 2.6 mm/d, as the published
dataset reports), and is written in the provider's real layout into ``landing/<source>/``.  The
truth goes to ``truth/`` and never into any landing file.  ``etfuse.synth.realistic`` subclasses
``World`` through its hooks (``_day``, ``_era5_day``, ``_gleam_day``, ``_modis_lst``,
``_station_day``, ``_write_cma``, ``_finish``) for the realistic profile (docs/synthetic-worlds.md).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.grid import TargetGrid, bilinear_map
from etfuse.synth.fields import (ERA5_RES, GLEAM_RES, LAMBDA_MJ_PER_KG, BlockMean, Lattice, SmoothNoise,
                                  cumulative_profile, insolation_of, season_of, smooth_field)
from etfuse.jsonutil import to_jsonable
from etfuse.stations_meta import cma_stations, fluxnet_sites
from etfuse.synth.writers_grids import write_era5land_cds_netcdf, write_gleam_year
from etfuse.synth.writers_modis import write_mod11a1_geotiff
from etfuse.synth.writers_stations import write_cma_evp_month, write_station_table

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class SourceError:
    """``observed = clip(gain * truth + offset + seasonal * season + noise, 0, max_mm)`` [mm day-1].

    ``noise`` has standard deviation ``noise_sd``, a spatial scale of ``noise_scale_deg`` and a
    day-to-day autocorrelation ``noise_rho``.
    """

    gain: float
    offset: float
    seasonal: float
    noise_sd: float
    noise_scale_deg: float = 0.5
    noise_rho: float = 0.5
    #: gridded products do not report more than this [mm day-1]; noise beyond it is clipped
    max_mm: float = 12.0


@dataclass(frozen=True)
class WorldSpec:
    """What to generate.  Bounds are cell edges [degrees]; dates inclusive."""

    bbox: tuple[float, float, float, float]
    start: str
    end: str
    resolution_deg: float = 0.01
    seed: int = 0
    margin_deg: float = 0.5
    #: spread of station observations around the truth at the station's cell [mm day-1]
    station_noise_sd: float = 0.35
    station_missing_fraction: float = 0.05
    #: share of cloudy MODIS cells on an average day (more in summer)
    cloud_fraction: float = 0.35
    #: E601B large-pan and 20 cm small-pan coefficients used to turn station ET into pan readings
    pan_coefficient_large: float = 0.5
    pan_coefficient_small: float = 0.35
    #: days at the end of the period delivered as preliminary ERA5T (expver 0005)
    era5t_days: int = 5
    #: GLEAM is published late: its files stop this many days before ``end`` (0 = complete)
    gleam_lag_days: int = 0
    #: ERA5-Land deliveries as CDS sends them now: a ZIP with a .nc name
    era5_zipped: bool = True
    gleam: SourceError = SourceError(gain=2.1, offset=0.9, seasonal=1.0, noise_sd=2.5, noise_scale_deg=0.75)
    era5land: SourceError = SourceError(gain=1.75, offset=0.5, seasonal=0.8, noise_sd=2.05, noise_scale_deg=0.4)
    modis_noise_k: float = 1.0

    def days(self) -> pd.DatetimeIndex:
        days = pd.date_range(self.start, self.end, freq="D")
        if len(days) == 0:
            raise ValueError(f"empty period: start {self.start} is after end {self.end}")
        return days


class World:
    """The generator; ``run(out)`` writes landing/ and truth/ and returns a manifest."""

    def __init__(self, spec: WorldSpec) -> None:
        self.spec = spec
        w, s, e, n = spec.bbox
        m = spec.margin_deg
        self.region = TargetGrid(w, e, s, n, spec.resolution_deg)
        # The fine grid covers the margin too, so coarse cells at the edge are fully averaged.
        self.fine = TargetGrid(w - m, e + m, s - m, n + m, spec.resolution_deg)
        self.rng = np.random.default_rng(spec.seed)
        self.gleam_lattice = Lattice.covering(self.fine.bbox(), GLEAM_RES, centred_on_multiples=False)
        self.era5_lattice = Lattice.covering(self.fine.bbox(), ERA5_RES, centred_on_multiples=True)
        self.gleam_mean = BlockMean(self.gleam_lattice, self.fine.lat, self.fine.lon)
        self.era5_mean = BlockMean(self.era5_lattice, self.fine.lat, self.fine.lon)
        # weather lives on a 0.05 deg lattice (cheap), interpolated bilinearly to the fine grid
        self.weather_lattice = Lattice.covering(self.fine.bbox(0.1), 0.05, centred_on_multiples=True)
        self.to_fine = bilinear_map(self.fine, self.weather_lattice.lat, self.weather_lattice.lon)
        wshape = (self.weather_lattice.lat.size, self.weather_lattice.lon.size)
        self.noise = {
            "rn": SmoothNoise(self.rng, wshape, 0.05, 1.5, 0.6),
            "temp": SmoothNoise(self.rng, wshape, 0.05, 2.0, 0.8),
            "moist": SmoothNoise(self.rng, wshape, 0.05, 1.0, 0.9),
            "cloud": SmoothNoise(self.rng, wshape, 0.05, 0.6, 0.3),
        }
        gshape = (self.gleam_lattice.lat.size, self.gleam_lattice.lon.size)
        eshape = (self.era5_lattice.lat.size, self.era5_lattice.lon.size)
        self.gleam_noise = SmoothNoise(self.rng, gshape, GLEAM_RES, spec.gleam.noise_scale_deg, spec.gleam.noise_rho)
        self.era5_noise = SmoothNoise(self.rng, eshape, ERA5_RES, spec.era5land.noise_scale_deg, spec.era5land.noise_rho)
        self.stations = self._stations()
        self.elevation = self._elevation()
        self.capacity = self._capacity()
        srow, scol = self.fine.cell_of(self.stations["lat"].values, self.stations["lon"].values)
        self.station_cells = (srow, scol)
        self.et_sites = self._et_sites()

    # ------------------------------------------------------------------ static world
    def _stations(self) -> pd.DataFrame:
        w, s, e, n = self.spec.bbox
        table = cma_stations()
        inside = table[(table.lon >= w) & (table.lon < e) & (table.lat >= s) & (table.lat < n)]
        return inside.reset_index(drop=True)

    def _elevation(self) -> np.ndarray:
        """Inverse-distance blend of all Qinghai station elevations, plus ridges [m]."""
        table = cma_stations()
        lat2d, lon2d = np.meshgrid(self.fine.lat, self.fine.lon, indexing="ij")
        num = np.zeros_like(lat2d)
        den = np.zeros_like(lat2d)
        for row in table.itertuples():
            wgt = 1.0 / (((lat2d - row.lat) ** 2 + (lon2d - row.lon) ** 2) + 0.05) ** 2
            num += wgt * row.elevation_m
            den += wgt
        base = num / den
        relief = 250.0 * smooth_field(self.rng, lat2d.shape, 0.08 / self.spec.resolution_deg)
        elevation = base + relief
        # stations sit at their real elevations
        rows, cols = self.fine.cell_of(table["lat"].values, table["lon"].values)
        ok = rows >= 0
        elevation[rows[ok], cols[ok]] = table["elevation_m"].values[ok]
        return elevation.astype(np.float32)

    def _capacity(self) -> np.ndarray:
        """Vegetation/moisture capacity [0.1, 1]: drier towards the north-west (Qaidam)."""
        lat2d, lon2d = np.meshgrid(self.fine.lat, self.fine.lon, indexing="ij")
        gradient = 0.55 + 0.05 * (lon2d - 96.0) - 0.04 * (lat2d - 35.5)
        patches = smooth_field(self.rng, lat2d.shape, 0.15 / self.spec.resolution_deg)
        return np.clip(gradient + 0.15 * patches, 0.1, 1.0).astype(np.float32)

    # ------------------------------------------------------------------ one day
    def _day(self, day: pd.Timestamp) -> dict[str, np.ndarray]:
        fine = lambda a: self.to_fine.apply(a)  # noqa: E731
        season, insolation = season_of(day), insolation_of(day)
        rn_anom = fine(self.noise["rn"].step())
        temp_anom = fine(self.noise["temp"].step())
        moist_anom = fine(self.noise["moist"].step())
        cloud_field = fine(self.noise["cloud"].step())
        rn = np.clip(1.0 + 13.0 * insolation + 2.5 * rn_anom, 0.2, None)                     # MJ m-2 d-1
        t_mean = (273.15 - 9.0 + 22.0 * insolation_of(day - pd.Timedelta(days=25))
                  - 0.0065 * (self.elevation - 3000.0) + 3.0 * temp_anom)                   # K
        frost = np.clip((t_mean - 266.0) / 12.0, 0.0, 1.0)
        moisture = np.clip(0.35 + 0.45 * season + 0.2 * moist_anom, 0.05, 1.0)
        et = self.capacity * moisture * frost * 0.7 * rn / LAMBDA_MJ_PER_KG
        et = (et + 0.05 * rn / LAMBDA_MJ_PER_KG).astype(np.float32)                           # sublimation floor
        diurnal_k = (4.0 + 6.0 * (1 - np.clip(cloud_field, -1, 1) * 0.5)).astype(np.float32)
        cloudy_share = min(0.9, self.spec.cloud_fraction * (0.7 + 0.6 * season))
        cloud_cut = np.quantile(cloud_field, 1 - cloudy_share)
        return {"et": et, "rn": rn.astype(np.float32), "t_mean": t_mean.astype(np.float32),
                "diurnal_k": diurnal_k, "cloud": cloud_field >= cloud_cut, "season": np.float32(season)}

    # ------------------------------------------------------------------ what the sources see (hooks)
    def _era5_day(self, f: dict[str, np.ndarray]) -> dict:
        """ERA5-Land's day on its lattice: et [mm], rn [MJ m-2], t_mean [K], diurnal_k [K], season."""
        spec = self.spec
        return {"et": self._observe(self.era5_mean(f["et"]), spec.era5land, self.era5_noise, f["season"]),
                "rn": self.era5_mean(f["rn"]) * np.float32(1 + 0.08 * self.rng.standard_normal()),
                "t_mean": self.era5_mean(f["t_mean"]) + np.float32(0.8),
                "diurnal_k": self.era5_mean(f["diurnal_k"]), "season": f["season"]}

    def _gleam_day(self, f: dict[str, np.ndarray]) -> np.ndarray:
        """GLEAM's ET [mm day-1] on its lattice."""
        return self._observe(self.gleam_mean(f["et"]), self.spec.gleam, self.gleam_noise, f["season"])

    def _modis_lst(self, day: pd.Timestamp, f: dict[str, np.ndarray]) -> np.ndarray | None:
        """MODIS daytime LST [K] on the fine grid, NaN where cloudy; None when no file is written."""
        lst = (f["t_mean"] + f["diurnal_k"] * np.float32(np.cos(2 * np.pi * (4.0 - 7.0) / 24.0))
               + self.spec.modis_noise_k * self.rng.standard_normal(f["t_mean"].shape).astype(np.float32))
        return np.where(f["cloud"], np.nan, lst)

    def _finish(self, out: Path, days: pd.DatetimeIndex) -> dict:
        """Extra files and manifest entries of a subclass; the default world has none."""
        return {}

    def _observe(self, truth_coarse: np.ndarray, err: SourceError, noise: SmoothNoise, season: float) -> np.ndarray:
        value = err.gain * truth_coarse + err.offset + err.seasonal * season + err.noise_sd * noise.step()
        return np.clip(value, 0.0, err.max_mm).astype(np.float32)

    # ------------------------------------------------------------------ whole run
    def run(self, out: Path, progress: Callable[[int, int], None] | None = None) -> dict:
        """Generate every day in order and write all files; returns the manifest (also saved)."""
        spec = self.spec
        out = Path(out)
        landing, truth_dir = out / "landing", out / "truth"
        for sub in ("era5land", "gleam", "cma", "stations", "modis"):
            (landing / sub).mkdir(parents=True, exist_ok=True)
        truth_dir.mkdir(parents=True, exist_ok=True)
        days = spec.days()
        # ERA5-Land's first 00 UTC step holds the total of the day before the period.
        all_days = pd.DatetimeIndex([days[0] - pd.Timedelta(days=1)]).append(days)
        ri0 = int(round(spec.margin_deg / spec.resolution_deg))
        region_rows = slice(ri0, ri0 + self.region.shape[0])
        region_cols = slice(ri0, ri0 + self.region.shape[1])

        era5_days: dict[pd.Timestamp, dict] = {}
        gleam_year: list[tuple[pd.Timestamp, np.ndarray]] = []
        truth_year: list[tuple[pd.Timestamp, np.ndarray]] = []
        station_rows: list[dict] = []
        site_rows: list[dict] = []
        written: dict[str, list[str]] = {k: [] for k in ("era5land", "gleam", "cma", "stations", "modis", "truth")}
        modis_margin = int(round(0.05 / spec.resolution_deg))
        mrows = slice(max(ri0 - modis_margin, 0), ri0 + self.region.shape[0] + modis_margin)
        mcols = slice(max(ri0 - modis_margin, 0), ri0 + self.region.shape[1] + modis_margin)
        gleam_last = days[-1] - pd.Timedelta(days=spec.gleam_lag_days)

        for k, day in enumerate(all_days):
            f = self._day(day)
            era5_days[day] = self._era5_day(f)
            if k > 0:
                gleam_et = self._gleam_day(f)
                if day <= gleam_last:
                    gleam_year.append((day, gleam_et))
                truth_year.append((day, f["et"][region_rows, region_cols]))
                station_rows.extend(self._station_day(day, f))
                site_rows.extend(self._site_day(day, f))
                lst = self._modis_lst(day, f)
                if lst is not None:
                    path = landing / "modis" / f"MOD11A1.A{day:%Y%j}.etfuse.061.tif"
                    write_mod11a1_geotiff(path, day=day, lat=self.fine.lat[mrows], lon=self.fine.lon[mcols],
                                          lst_k=lst[mrows, mcols])
                    written["modis"].append(path.name)
                last_of_month = k == len(all_days) - 1 or all_days[k + 1].month != day.month
                if last_of_month:
                    written["era5land"].append(self._write_era5_month(landing / "era5land", era5_days, day,
                                                                      final=k == len(all_days) - 1))
                    era5_days = {day: era5_days[day]}   # its total is next month's first 00 UTC step
                last_of_year = k == len(all_days) - 1 or all_days[k + 1].year != day.year
                if last_of_year:
                    if gleam_year:
                        written["gleam"].append(self._write_gleam(landing / "gleam", gleam_year))
                    written["truth"].append(self._write_truth(truth_dir, truth_year))
                    gleam_year, truth_year = [], []
            if progress:
                progress(k + 1, len(all_days))
        written["cma"] = self._write_cma(landing / "cma", pd.DataFrame(station_rows))
        written["stations"] = self._write_site_table(landing / "stations", pd.DataFrame(site_rows))
        pd.DataFrame(station_rows).to_csv(truth_dir / "stations_truth.csv", index=False)
        written["truth"].extend(self._write_static(out, region_rows, region_cols))
        manifest = {"spec": to_jsonable(asdict(spec)), "files": written,
                    "stations": self.stations["station_id"].tolist(),
                    "region_shape": list(self.region.shape), **self._finish(out, days)}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
        return manifest

    def _station_day(self, day: pd.Timestamp, f: dict[str, np.ndarray]) -> list[dict]:
        rows, cols = self.station_cells
        truth = f["et"][rows, cols]
        noise = self.rng.standard_normal(truth.size) * self.spec.station_noise_sd * (0.5 + 0.5 * np.sqrt(truth))
        observed = np.clip(truth + noise, 0.0, None)
        missing = self.rng.random(truth.size) < self.spec.station_missing_fraction
        out = []
        for i, st in enumerate(self.stations.itertuples()):
            out.append({"station_id": st.station_id, "lat": st.lat, "lon": st.lon, "elevation_m": st.elevation_m,
                        "date": day, "et_truth_mm": float(truth[i]),
                        "et_obs_mm": np.nan if missing[i] else float(observed[i])})
        return out

    def _write_era5_month(self, folder: Path, era5_days: dict[pd.Timestamp, dict], month_end: pd.Timestamp,
                          final: bool) -> str:
        """One hourly new-CDS file as a monthly CDS request delivers it: 00 UTC of the month's first
        day (or of the period's first day) to 23 UTC of its last day; the period's last file also
        holds the 00 UTC step after it, so every day of the period is complete somewhere."""
        spec = self.spec
        solar, flat = cumulative_profile("solar"), cumulative_profile("flat")
        first = max(pd.Timestamp(month_end.year, month_end.month, 1), pd.Timestamp(spec.start))
        steps = pd.date_range(first, month_end + pd.Timedelta(hours=24 if final else 23), freq="h")
        era5t_from = pd.Timestamp(spec.end) - pd.Timedelta(days=spec.era5t_days - 1)
        e, ssr, str_, skt, expver = [], [], [], [], []
        for when in steps:
            acc_day = (when - pd.Timedelta(hours=1)).floor("D")       # the day this accumulation belongs to
            h = int((when - acc_day) / pd.Timedelta(hours=1)) - 1      # 0..23: share reached by `when`
            d = era5_days[acc_day]
            net_solar = d["rn"] + np.float32(6.0 + 3.0 * float(d["season"]))   # MJ m-2; net thermal = rn - that
            e.append(-d["et"] * solar[h] / 1000.0)                     # m of water, negative = evaporation
            ssr.append(net_solar * solar[h] * 1e6)                     # J m-2
            str_.append((d["rn"] - net_solar) * flat[h] * 1e6)
            inst = era5_days.get(when.floor("D"), d)
            skt.append(inst["t_mean"] + inst["diurnal_k"] * np.float32(np.cos(2 * np.pi * (when.hour - 7.0) / 24.0)))
            expver.append("0005" if acc_day >= era5t_from else "0001")
        dims = ("valid_time", "latitude", "longitude")
        hourly = xr.Dataset(
            {"e": (dims, np.stack(e).astype(np.float32)), "ssr": (dims, np.stack(ssr).astype(np.float32)),
             "str": (dims, np.stack(str_).astype(np.float32)), "skt": (dims, np.stack(skt).astype(np.float32))},
            coords={"valid_time": steps, "latitude": self.era5_lattice.lat, "longitude": self.era5_lattice.lon,
                    "expver": ("valid_time", expver)})
        name = f"era5land_{month_end:%Y%m}.nc"
        write_era5land_cds_netcdf(folder / name, hourly, zipped=spec.era5_zipped)
        return name

    def _write_gleam(self, folder: Path, year: list[tuple[pd.Timestamp, np.ndarray]]) -> str:
        et = xr.DataArray(np.stack([v for _, v in year]), dims=("time", "lat", "lon"),
                          coords={"time": [d for d, _ in year], "lat": self.gleam_lattice.lat,
                                  "lon": self.gleam_lattice.lon})
        name = f"E_{year[0][0]:%Y}_GLEAM_v3.7a.nc"
        write_gleam_year(folder / name, et, version="v3.7a", dim_order=("time", "lon", "lat"))
        return name

    def _write_truth(self, folder: Path, year: list[tuple[pd.Timestamp, np.ndarray]]) -> str:
        ds = xr.Dataset({"et": (("time", "lat", "lon"), np.stack([v for _, v in year]))},
                        coords={"time": [d for d, _ in year], "lat": self.region.lat, "lon": self.region.lon})
        ds["et"].attrs.update(units="kg m-2", long_name="synthetic truth: actual evapotranspiration, daily total")
        name = f"et_truth_{year[0][0]:%Y}.nc"
        ds.to_netcdf(folder / name, encoding={"et": {"zlib": True, "complevel": 1}})
        return name

    def _write_static(self, out: Path, rows: slice, cols: slice) -> list[str]:
        """A DEM as a static input (``static/elevation.nc``, like a resampled SRTM) and the
        vegetation capacity, which is part of the truth (``truth/capacity.nc``)."""
        (out / "static").mkdir(parents=True, exist_ok=True)
        dem = xr.Dataset({"elevation": (("lat", "lon"), self.elevation[rows, cols])},
                         coords={"lat": self.region.lat, "lon": self.region.lon})
        dem["elevation"].attrs.update(units="m", standard_name="height_above_mean_sea_level",
                                      long_name="synthetic DEM")
        dem.to_netcdf(out / "static" / "elevation.nc")
        cap = xr.Dataset({"capacity": (("lat", "lon"), self.capacity[rows, cols])},
                         coords={"lat": self.region.lat, "lon": self.region.lon})
        cap["capacity"].attrs.update(units="1", long_name="synthetic vegetation/moisture capacity")
        cap.to_netcdf(out / "truth" / "capacity.nc")
        return ["capacity.nc"]

    def _write_cma(self, folder: Path, rows: pd.DataFrame) -> list[str]:
        """CMA EVP monthly text files: station ET turned back into pan readings."""
        spec = self.spec
        if rows.empty:
            return []
        rows = rows.copy()
        rows["date"] = pd.to_datetime(rows["date"])
        obs = rows["et_obs_mm"].to_numpy(dtype=np.float64)
        large_missing = self.rng.random(len(rows)) < 0.1     # the large pan is frozen or out of use at times
        rows["pan_large_mm"] = np.where(large_missing, np.nan, obs / spec.pan_coefficient_large)
        rows["pan_small_mm"] = obs / spec.pan_coefficient_small
        rows["qc_large"] = np.where(np.isnan(rows["pan_large_mm"]), 8, 0)
        rows["qc_small"] = np.where(np.isnan(rows["pan_small_mm"]), 8, 0)
        rows["elevation_estimated"] = False
        names = []
        for (year, month), part in rows.groupby([rows["date"].dt.year, rows["date"].dt.month]):
            name = f"SURF_CLI_CHN_MUL_DAY-EVP-13240-{year:04d}{month:02d}.TXT"
            write_cma_evp_month(folder / name, part[["station_id", "lat", "lon", "elevation_m", "elevation_estimated",
                                                     "date", "pan_small_mm", "pan_large_mm", "qc_small", "qc_large"]])
            names.append(name)
        return names

    def _et_sites(self) -> pd.DataFrame:
        """Sites measuring ET directly: flux towers inside the region, else two lysimeters at CMA stations."""
        w, s, e, n = self.spec.bbox
        sites = fluxnet_sites()
        sites = sites[(sites.lon >= w) & (sites.lon < e) & (sites.lat >= s) & (sites.lat < n)]
        if len(sites):
            return pd.DataFrame({"station_id": sites["site_id"].values, "lat": sites["lat"].values,
                                 "lon": sites["lon"].values, "elevation_m": sites["elevation_m"].values,
                                 "with_coordinates": False})
        head = self.stations.head(2)
        return pd.DataFrame({"station_id": ["LYS-" + str(i) for i in head["station_id"]], "lat": head["lat"].values,
                             "lon": head["lon"].values, "elevation_m": head["elevation_m"].values,
                             "with_coordinates": True})

    def _site_day(self, day: pd.Timestamp, f: dict[str, np.ndarray]) -> list[dict]:
        sites = self.et_sites
        rows, cols = self.fine.cell_of(sites["lat"].values, sites["lon"].values)
        truth = f["et"][rows, cols]
        measured = np.clip(truth + 0.25 * self.rng.standard_normal(truth.size), 0.0, None)
        return [{"station_id": site.station_id, "date": f"{day:%Y-%m-%d}", "et_mm": round(float(measured[i]), 2),
                 **({"lat": site.lat, "lon": site.lon, "elevation_m": site.elevation_m} if site.with_coordinates else {})}
                for i, site in enumerate(sites.itertuples())]

    def _write_site_table(self, folder: Path, table: pd.DataFrame) -> list[str]:
        if table.empty:
            return []
        name = f"station_et_{table['date'].min().replace('-', '')}_{table['date'].max().replace('-', '')}.csv"
        write_station_table(folder / name, table)
        return [name]


def generate(out: Path, spec: WorldSpec, progress: Callable[[int, int], None] | None = None) -> dict:
    """Write a synthetic world for ``spec`` under ``out`` (landing/, truth/, manifest.json)."""
    return World(spec).run(Path(out), progress)
