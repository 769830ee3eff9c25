"""The product file's schema: CF-1.11 + ACDD-1.3 attributes and the netCDF writer of day blocks.

One function, :func:`write_product_file`, writes both the operational daily files (one day) and
the yearly files users receive (the days of a year, concatenated on ``time``): same variables,
same attributes, only the chunk shape and the global attributes' period differ.  See
docs/product.md for what users see.

Choices (and why):

* ``et`` is float32 with ``_FillValue = -9999.0`` (also ``missing_value``), not NaN: a numeric
  sentinel works in every netCDF tool (CDO, NCO, GDAL, NCL, Panoply, Ferret); a NaN fill never
  compares equal to itself, so tools that test ``x == _FillValue`` miss it.  xarray, CDO and GDAL
  all decode -9999 to missing.  -9999 is an integer, so quantisation keeps it exact.
* ``least_significant_digit`` quantises to a power of two (netCDF4-python's bit-shaving):
  ``least_significant_digit = 2`` keeps a resolution of 1/128 mm, so every stored value is within
  0.004 mm of the model's output.  zlib with the HDF5 shuffle filter.
* Per-day provenance lives on the ``time`` dimension (``model_version``, ``product_status``,
  ``sources_used``, ``input_fingerprint``) and is named in ``et:ancillary_variables``, so the
  yearly file keeps each day's provenance.
* ``time`` is the start of the UTC day (days since 1970-01-01), with ``time_bnds`` = [start, end]:
  the product's day D is the total over 00-24 UTC of D.
* Latitude runs north to south (the target grid's order); ``lat_bnds`` are ordered like the
  coordinate ([north edge, south edge]) so neighbouring cells share their edge values exactly.
"""

from __future__ import annotations

import functools
import importlib.metadata
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import netCDF4
import numpy as np
import pandas as pd

from etfuse import clock
from etfuse.grid import TargetGrid
from etfuse.interval import BOUND_NAMES

CONVENTIONS = "CF-1.11, ACDD-1.3"
#: The product line's version: bumped when the file layout or the method changes.
PRODUCT_VERSION = "1.0"
FILL_VALUE = np.float32(-9999.0)
TIME_UNITS = "days since 1970-01-01 00:00:00"
CALENDAR = "standard"
EPOCH = pd.Timestamp("1970-01-01")
#: a SHA-256 hex digest
FINGERPRINT_LENGTH = 64

STATUS_CODES: dict[str, int] = {"provisional": 1, "final": 2}
STATUS_NAMES: dict[int, str] = {v: k for k, v in STATUS_CODES.items()}
SOURCE_BITS: dict[str, int] = {"gleam": 1, "era5land": 2, "modis": 4}

#: EPSG:4326 in OGC WKT 2 (ISO 19162:2015 form, as CF asks for ``crs_wkt``).
WGS84_WKT = (
    'GEOGCRS["WGS 84",DATUM["World Geodetic System 1984",ELLIPSOID["WGS 84",6378137,298.257223563,'
    'LENGTHUNIT["metre",1]]],PRIMEM["Greenwich",0,ANGLEUNIT["degree",0.0174532925199433]],'
    'CS[ellipsoidal,2],AXIS["geodetic latitude (Lat)",north,ORDER[1],ANGLEUNIT["degree",0.0174532925199433]],'
    'AXIS["geodetic longitude (Lon)",east,ORDER[2],ANGLEUNIT["degree",0.0174532925199433]],ID["EPSG",4326]]')

#: Descriptive attributes an operator may override (``ProductStore(..., metadata={...})``).
#: The license is a default chosen for this code base: confirm it with the data owner.
DEFAULT_METADATA: dict[str, str] = {
    "institution": "etfuse operational ET service",
    "creator_name": "etfuse operations",
    "creator_type": "group",
    "publisher_name": "etfuse operations",
    "naming_authority": "etfuse",
    "project": "etfuse: operational daily evapotranspiration for Qinghai",
    "license": "CC-BY-4.0",
    "acknowledgement": ("Inputs: GLEAM (Global Land Evaporation Amsterdam Model), ERA5-Land (Copernicus Climate "
                        "Change Service, ECMWF), MODIS MOD11A1 v061 (NASA LP DAAC), CMA daily surface "
                        "observations (China Meteorological Administration)."),
}

KEYWORDS = ("EARTH SCIENCE > ATMOSPHERE > ATMOSPHERIC WATER VAPOR > WATER VAPOR PROCESSES > EVAPOTRANSPIRATION, "
            "evapotranspiration, actual evaporation, Qinghai, Tibetan Plateau, GCN-GRU, GLEAM, ERA5-Land, MODIS")

REFERENCES = (
    "Seed dataset: the published daily 0.01 degree actual evapotranspiration dataset for Qinghai Province, "
    "China, made by a graph-convolutional recurrent network (GCN-GRU) that fuses GLEAM and ERA5-Land "
    "evaporation with MODIS land surface temperature and net radiation, trained against CMA station "
    "observations (reported RMSE < 1.25 mm/day and correlation 0.83 against stations); published as one "
    "file per year.  This product continues that method operationally with the same grid and units.")

COMMENT = (
    "Station 'ET' used to train the model is derived from CMA pan evaporation (E601B large pan preferred, "
    "20 cm small pan otherwise) times a pan coefficient: pans measure atmospheric demand, not actual "
    "evapotranspiration, so errors in the coefficient are learned as truth.  Only flux towers and "
    "lysimeters measure actual ET.  Days are 00-24 UTC (08-08 Beijing time); CMA station days end at "
    "20:00 Beijing time and are paired by date.  Days marked provisional (product_status = 1) were made "
    "without GLEAM or before final ERA5-Land and are replaced when those inputs arrive.")


@functools.lru_cache(maxsize=1)
def etfuse_version() -> str:
    try:
        return importlib.metadata.version("etfuse")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def iso_utc(moment: datetime) -> str:
    """The product's CF/ACDD time stamps: whole seconds, ``2021-06-01T10:00:00Z``."""
    return clock.iso_utc(moment, "seconds")


def sources_mask(sources: Iterable[str]) -> int:
    mask = 0
    for name in sources:
        mask |= SOURCE_BITS[name]
    return mask


def sources_from_mask(mask: int) -> frozenset[str]:
    return frozenset(name for name, bit in SOURCE_BITS.items() if int(mask) & bit)


@dataclass(frozen=True)
class DayProvenance:
    """What is recorded per product day, in the file and in the ledger."""

    day: pd.Timestamp
    model_version: int
    status: str
    sources_used: frozenset[str]
    fingerprint: str


def _edges(first_edge: float, step: float, n: int) -> np.ndarray:
    # Rounded so that shared edges of neighbouring cells are bit-identical (CF 7.1 contiguity).
    return np.round(first_edge + step * np.arange(n + 1), 10)


def grid_axes(grid: TargetGrid) -> dict[str, np.ndarray]:
    """Cell centres and [n, 2] bounds of the grid: lat north to south, lon west to east."""
    n_lat, n_lon = grid.shape
    lat_edges = _edges(grid.lat_max, -grid.resolution_deg, n_lat)
    lon_edges = _edges(grid.lon_min, grid.resolution_deg, n_lon)
    return {"lat": np.round(grid.lat, 10), "lon": np.round(grid.lon, 10),
            "lat_bnds": np.stack([lat_edges[:-1], lat_edges[1:]], axis=1),
            "lon_bnds": np.stack([lon_edges[:-1], lon_edges[1:]], axis=1)}


def _duration(days: int) -> str:
    return f"P{days}D"


def global_attributes(grid: TargetGrid, *, region_name: str, ident: str, period_label: str,
                      start: pd.Timestamp, end_exclusive: pd.Timestamp, model_versions: Sequence[int],
                      history: str, created: datetime, modified: datetime,
                      metadata: Mapping[str, str] | None = None) -> dict[str, object]:
    """CF-1.11 + ACDD-1.3 global attributes of a product file covering [start, end_exclusive)."""
    meta = {**DEFAULT_METADATA, **(metadata or {})}
    versions = ", ".join(str(v) for v in sorted(set(int(v) for v in model_versions)))
    res = f"{grid.resolution_deg:g} degree"
    attrs: dict[str, object] = {
        "Conventions": CONVENTIONS,
        "title": (f"etfuse daily actual evapotranspiration, {region_name} region, {grid.resolution_deg:g} degree, "
                  f"{period_label}"),
        "summary": (
            "Daily actual evapotranspiration (ET, 00-24 UTC totals, kg m-2 = mm) on a regular "
            f"{grid.resolution_deg:g} degree latitude-longitude grid over {region_name} "
            f"({grid.lon_min:g}-{grid.lon_max:g} E, {grid.lat_min:g}-{grid.lat_max:g} N), computed by a "
            "graph-convolutional recurrent network (GCN-GRU) that fuses GLEAM and ERA5-Land evaporation, MODIS "
            "MOD11A1 land surface temperature (ERA5-Land skin temperature where MODIS is missing) and ERA5-Land "
            "net radiation, trained against CMA station observations.  Each day records the model version, the "
            "input sources used, its status (provisional or final) and a fingerprint of its inputs."),
        "keywords": KEYWORDS,
        "keywords_vocabulary": "GCMD:GCMD Science Keywords",
        "standard_name_vocabulary": "CF Standard Name Table v93",
        "id": ident,
        "naming_authority": meta["naming_authority"],
        "institution": meta["institution"],
        "source": (f"etfuse {etfuse_version()} GCN-GRU (ONNX), model version(s) {versions}; inputs GLEAM, "
                   "ERA5-Land, MODIS MOD11A1 v061"),
        "history": history,
        "date_created": iso_utc(created),
        "date_modified": iso_utc(modified),
        "creator_name": meta["creator_name"],
        "creator_type": meta["creator_type"],
        "publisher_name": meta["publisher_name"],
        "project": meta["project"],
        "license": meta["license"],
        "acknowledgement": meta["acknowledgement"],
        "product_version": PRODUCT_VERSION,
        "processing_level": "Level 4: model output fusing satellite, reanalysis and station data",
        "cdm_data_type": "Grid",
        "model_versions": versions,
        "geospatial_lat_min": float(grid.lat_min),
        "geospatial_lat_max": float(grid.lat_max),
        "geospatial_lon_min": float(grid.lon_min),
        "geospatial_lon_max": float(grid.lon_max),
        "geospatial_lat_units": "degrees_north",
        "geospatial_lon_units": "degrees_east",
        "geospatial_lat_resolution": res,
        "geospatial_lon_resolution": res,
        "geospatial_bounds": (f"POLYGON(({grid.lat_min:g} {grid.lon_min:g}, {grid.lat_max:g} {grid.lon_min:g}, "
                              f"{grid.lat_max:g} {grid.lon_max:g}, {grid.lat_min:g} {grid.lon_max:g}, "
                              f"{grid.lat_min:g} {grid.lon_min:g}))"),
        "geospatial_bounds_crs": "EPSG:4326",
        "time_coverage_start": f"{start:%Y-%m-%dT%H:%M:%SZ}",
        "time_coverage_end": f"{end_exclusive:%Y-%m-%dT%H:%M:%SZ}",
        "time_coverage_duration": _duration((end_exclusive - start).days),
        "time_coverage_resolution": "P1D",
        "references": REFERENCES,
        "comment": COMMENT,
        "etfuse_version": etfuse_version(),
    }
    for key, value in meta.items():            # extra operator-supplied attributes
        attrs.setdefault(key, value)
    return attrs


def _set_attrs(var, attrs: Mapping[str, object]) -> None:
    var.setncatts({k: v for k, v in attrs.items()})


#: zlib level of the interval's bounds (at most ``serving.compression_level``)
BOUND_COMPLEVEL = 1


def bound_attributes(name: str) -> dict[str, object]:
    """CF attributes of an interval bound (``et_q05`` or ``et_q95``), in every form of the product."""
    quantile, side = {"et_q05": (0.05, "lower"), "et_q95": (0.95, "upper")}[name]
    return {"long_name": (f"{side} bound of the 90 % prediction interval of actual evapotranspiration "
                          f"(the {quantile:.0%} quantile), daily total"),
            "units": "kg m-2", "cell_methods": "time: sum", "grid_mapping": "crs",
            "coverage_content_type": "qualityInformation",
            "comment": ("the model's raw quantile half-width scaled by a per-season conformal factor calibrated on "
                        "stations it was not trained on; covers about 90 % of station-days (model card)")}


def write_product_file(path: Path, grid: TargetGrid, provenance: list[DayProvenance],
                       blocks: Callable[[int, int], np.ndarray], *, chunks: tuple[int, int, int],
                       compression_level: int, least_significant_digit: int | None,
                       global_attrs: Mapping[str, object], block_days: int | None = None,
                       lock: AbstractContextManager | None = None, bounds: bool = False) -> None:
    """Write a complete product file at ``path`` (the caller renames it into place).

    ``blocks(t0, t1)`` returns ET [mm] for days ``provenance[t0:t1]`` as float32 ``(t1 - t0, n_lat,
    n_lon)`` with NaN (or ``FILL_VALUE``) where there is no value; it is called for consecutive blocks of ``block_days``
    days (default: the time chunk), so memory stays at one block and each chunk is written once.
    ``blocks`` may replace entries of ``provenance`` (a day that changed while it was read): the
    provenance variables are written last, from the list as it is then.  With ``bounds`` the file
    also holds the 90 % interval (``et_q05``, ``et_q95``, named in ``et:ancillary_variables``) and
    ``blocks`` returns a dict of the three arrays (NaN where a day has no interval).  ``lock`` is held around
    every netCDF call made here but not while ``blocks`` runs (it takes the lock itself if it reads
    netCDF files), so other threads' reads are not held up for a whole yearly build.
    """
    guard = lock if lock is not None else nullcontext()
    n_days = len(provenance)
    n_lat, n_lon = grid.shape
    axes = grid_axes(grid)
    t_start = np.array([(pd.Timestamp(p.day) - EPOCH).days for p in provenance], dtype=np.float64)
    with guard:
        nc = netCDF4.Dataset(path, "w", format="NETCDF4")
    try:
        with guard:
            nc.setncatts(dict(global_attrs))
            nc.createDimension("time", n_days)
            nc.createDimension("lat", n_lat)
            nc.createDimension("lon", n_lon)
            nc.createDimension("nv", 2)

            time = nc.createVariable("time", "f8", ("time",))
            _set_attrs(time, {"standard_name": "time", "long_name": "start of the product day (UTC)",
                              "units": TIME_UNITS, "calendar": CALENDAR, "units_metadata": "leap_seconds: none",
                              "axis": "T", "bounds": "time_bnds"})
            time[:] = t_start
            nc.createVariable("time_bnds", "f8", ("time", "nv"))[:] = np.stack([t_start, t_start + 1.0], axis=1)

            lat = nc.createVariable("lat", "f8", ("lat",))
            _set_attrs(lat, {"standard_name": "latitude", "long_name": "latitude of cell centre",
                             "units": "degrees_north", "axis": "Y", "bounds": "lat_bnds"})
            lat[:] = axes["lat"]
            nc.createVariable("lat_bnds", "f8", ("lat", "nv"))[:] = axes["lat_bnds"]
            lon = nc.createVariable("lon", "f8", ("lon",))
            _set_attrs(lon, {"standard_name": "longitude", "long_name": "longitude of cell centre",
                             "units": "degrees_east", "axis": "X", "bounds": "lon_bnds"})
            lon[:] = axes["lon"]
            nc.createVariable("lon_bnds", "f8", ("lon", "nv"))[:] = axes["lon_bnds"]

            crs = nc.createVariable("crs", "i4", ())
            _set_attrs(crs, {"grid_mapping_name": "latitude_longitude", "long_name": "WGS 84 (EPSG:4326)",
                             "semi_major_axis": 6378137.0, "inverse_flattening": 298.257223563,
                             "longitude_of_prime_meridian": 0.0, "crs_wkt": WGS84_WKT})
            crs.assignValue(0)

            mv = nc.createVariable("model_version", "i4", ("time",))
            _set_attrs(mv, {"long_name": "version of the registered GCN-GRU model that computed the day",
                            "coverage_content_type": "auxiliaryInformation",
                            "comment": "MLflow registered model version (serving alias 'champion' at write time)"})
            st = nc.createVariable("product_status", "i1", ("time",))
            _set_attrs(st, {"long_name": "status of the product day", "coverage_content_type": "qualityInformation",
                            "flag_values": np.array(sorted(STATUS_NAMES), dtype=np.int8),
                            "flag_meanings": " ".join(STATUS_NAMES[k] for k in sorted(STATUS_NAMES)),
                            "comment": ("provisional: made without GLEAM or before final ERA5-Land; replaced by "
                                        "a final day when those inputs arrive")})
            su = nc.createVariable("sources_used", "i1", ("time",))
            _set_attrs(su, {"long_name": "input sources used for the day",
                            "coverage_content_type": "auxiliaryInformation",
                            "flag_masks": np.array(list(SOURCE_BITS.values()), dtype=np.int8),
                            "flag_meanings": " ".join(SOURCE_BITS),
                            "valid_range": np.array([0, sum(SOURCE_BITS.values())], dtype=np.int8),
                            "comment": ("bit field: 1 GLEAM, 2 ERA5-Land, 4 MODIS LST (without MODIS the model "
                                        "used ERA5-Land skin temperature)")})
            # A char array (not a netCDF-4 string): classic tools and CF checkers read it; _Encoding
            # makes netCDF4-python and xarray return it as text.
            nc.createDimension("fingerprint_strlen", FINGERPRINT_LENGTH)
            fp = nc.createVariable("input_fingerprint", "S1", ("time", "fingerprint_strlen"))
            _set_attrs(fp, {"_Encoding": "utf-8", "long_name": "SHA-256 (hex) of the day's model inputs",
                            "coverage_content_type": "auxiliaryInformation",
                            "comment": ("a day is recomputed and replaced when its fingerprint or model version "
                                        "changes")})

            et = nc.createVariable(
                "et", "f4", ("time", "lat", "lon"), zlib=compression_level > 0,
                complevel=max(compression_level, 1), shuffle=compression_level > 0, chunksizes=chunks,
                fill_value=FILL_VALUE, least_significant_digit=least_significant_digit)
            ancillary = "product_status sources_used model_version input_fingerprint"
            _set_attrs(et, {"standard_name": "water_evapotranspiration_amount",
                            "long_name": "actual evapotranspiration, daily total 00-24 UTC",
                            "units": "kg m-2", "cell_methods": "time: sum", "grid_mapping": "crs",
                            "missing_value": FILL_VALUE, "coverage_content_type": "modelResult",
                            "ancillary_variables": ancillary + (" " + " ".join(BOUND_NAMES) if bounds else ""),
                            "comment": "1 kg m-2 = 1 mm of water; positive for evaporation"})
            variables = {"et": et}
            for name in BOUND_NAMES if bounds else ():
                # zlib level 1: the bounds are secondary and level 1 writes them about twice as fast
                # (measured on a 62-day yearly build), for a few per cent more bytes
                var = nc.createVariable(
                    name, "f4", ("time", "lat", "lon"), zlib=compression_level > 0,
                    complevel=min(max(compression_level, 1), BOUND_COMPLEVEL), shuffle=compression_level > 0,
                    chunksizes=chunks, fill_value=FILL_VALUE, least_significant_digit=least_significant_digit)
                _set_attrs(var, {**bound_attributes(name), "missing_value": FILL_VALUE})
                variables[name] = var
        step = block_days or chunks[0]
        for t0 in range(0, n_days, step):
            t1 = min(n_days, t0 + step)
            got = blocks(t0, t1)
            fields = got if isinstance(got, Mapping) else {"et": got}
            for name, var in variables.items():
                block = np.asarray(fields[name], dtype=np.float32)
                if block.shape != (t1 - t0, n_lat, n_lon):
                    raise ValueError(f"expected a {name} block of shape {(t1 - t0, n_lat, n_lon)}, got {block.shape}")
                # a plain array with the fill value (masked arrays cost more than the compression)
                block = np.where(np.isnan(block), FILL_VALUE, block)
                with guard:
                    var[t0:t1] = block
        with guard:
            # Provenance last: each day's provenance describes the values written for it.
            mv[:] = np.array([p.model_version for p in provenance], dtype=np.int32)
            st[:] = np.array([STATUS_CODES[p.status] for p in provenance], dtype=np.int8)
            su[:] = np.array([sources_mask(p.sources_used) for p in provenance], dtype=np.int8)
            fp[:] = np.array([p.fingerprint for p in provenance], dtype=f"U{FINGERPRINT_LENGTH}")
            nc.setncattr("model_versions", ", ".join(str(v) for v in sorted({p.model_version for p in provenance})))
    finally:
        with guard:
            nc.close()


def read_provenance(nc: netCDF4.Dataset) -> list[DayProvenance]:
    """Per-day provenance of an open product file."""
    times = np.asarray(nc["time"][:], dtype=np.float64)
    mv = np.asarray(nc["model_version"][:])
    st = np.asarray(nc["product_status"][:])
    su = np.asarray(nc["sources_used"][:])
    fp = np.atleast_1d(np.ma.getdata(nc["input_fingerprint"][:]))      # text through _Encoding
    text = [f.decode() if isinstance(f, bytes) else str(f) for f in fp]
    return [DayProvenance(EPOCH + pd.Timedelta(days=float(t)), int(m), STATUS_NAMES.get(int(s), f"unknown-{int(s)}"),
                          sources_from_mask(int(u)), f)
            for t, m, s, u, f in zip(times, mv, st, su, text)]
