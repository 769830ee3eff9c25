"""Writers of gridded provider files in the providers' own layouts (docs/data-formats.md).

They exist for the synthetic world and for tests: whatever they write must be read by the same
reader code that reads real deliveries, so each mirrors a real layout closely (names, dtypes,
packing, fill values, dimension order, ZIP wrapping).

Input to the ERA5-Land writers is an hourly dataset in provider units: dims ``(valid_time,
latitude, longitude)`` (latitude descending), variables among ``e`` [m], ``tp`` [m], ``ssr``,
``str`` [J m-2] accumulated since 00 UTC, ``skt``, ``t2m`` [K], and a coordinate
``expver(valid_time)`` of strings ('0001' final, '0005' ERA5T).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterable

import netCDF4
import numpy as np
import pandas as pd
import xarray as xr

ERA5LAND_ATTRS = {
    "e": {"units": "m of water equivalent", "long_name": "Evaporation", "GRIB_paramId": 182, "GRIB_stepType": "accum"},
    "tp": {"units": "m", "long_name": "Total precipitation", "GRIB_paramId": 228, "GRIB_stepType": "accum"},
    "ssr": {"units": "J m**-2", "long_name": "Surface net short-wave (solar) radiation", "GRIB_paramId": 176,
            "GRIB_stepType": "accum"},
    "str": {"units": "J m**-2", "long_name": "Surface net long-wave (thermal) radiation", "GRIB_paramId": 177,
            "GRIB_stepType": "accum"},
    "skt": {"units": "K", "long_name": "Skin temperature", "GRIB_paramId": 235, "GRIB_stepType": "instant"},
    "t2m": {"units": "K", "long_name": "2 metre temperature", "GRIB_paramId": 167, "GRIB_stepType": "instant"},
}
_GRIB_SHORT = {"t2m": "2t"}


def _atomic(path: Path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(path.name + ".part")


def _cds_member(hourly: xr.Dataset, names: Iterable[str], path: Path) -> None:
    """One new-CDS NetCDF member: int64 seconds since 1970, ``number`` and ``expver`` coordinates."""
    times = pd.DatetimeIndex(hourly["valid_time"].values)
    seconds = ((times - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.GRIB_centre = "ecmf"
        nc.Conventions = "CF-1.7"
        nc.institution = "European Centre for Medium-Range Weather Forecasts"
        nc.history = "etfuse synthetic world, new CDS NetCDF layout"
        nc.createDimension("valid_time", len(times))
        nc.createDimension("latitude", hourly.sizes["latitude"])
        nc.createDimension("longitude", hourly.sizes["longitude"])
        number = nc.createVariable("number", "i8")
        number.long_name, number.units, number.standard_name = "ensemble member numerical id", "1", "realization"
        number.assignValue(0)
        vt = nc.createVariable("valid_time", "i8", ("valid_time",))
        vt.long_name, vt.standard_name = "time", "time"
        vt.units, vt.calendar = "seconds since 1970-01-01", "proleptic_gregorian"
        vt[:] = seconds
        for axis, units in (("latitude", "degrees_north"), ("longitude", "degrees_east")):
            v = nc.createVariable(axis, "f8", (axis,), fill_value=np.nan)
            v.units, v.standard_name, v.long_name = units, axis, axis
            v[:] = hourly[axis].values
        nc["latitude"].stored_direction = "decreasing"
        ev = nc.createVariable("expver", str, ("valid_time",))
        ev[:] = np.asarray(hourly["expver"].values, dtype=object)
        for name in names:
            v = nc.createVariable(name, "f4", ("valid_time", "latitude", "longitude"), fill_value=np.float32(np.nan),
                                  zlib=True, complevel=1, chunksizes=(1, hourly.sizes["latitude"], hourly.sizes["longitude"]))
            for key, value in ERA5LAND_ATTRS[name].items():
                v.setncattr(key, value)
            v.coordinates = "number valid_time latitude longitude expver"
            v[:] = hourly[name].values.astype(np.float32)


def write_era5land_cds_netcdf(path: Path, hourly: xr.Dataset, *, zipped: bool = False) -> Path:
    """The new CDS layout (2024 on).  ``zipped`` mimics CDS: a ZIP named ``.nc`` holding one
    member per step type (``data_stream-oper_stepType-accum.nc`` and ``...-instant.nc``)."""
    path = Path(path)
    tmp = _atomic(path)
    names = [n for n in ERA5LAND_ATTRS if n in hourly.data_vars]
    if not zipped:
        _cds_member(hourly, names, tmp)
    else:
        groups = {kind: [n for n in names if ERA5LAND_ATTRS[n]["GRIB_stepType"] == kind] for kind in ("accum", "instant")}
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for kind, members in groups.items():
                if not members:
                    continue
                member = tmp.with_name(f"{tmp.name}.{kind}")
                _cds_member(hourly, members, member)
                zf.write(member, arcname=f"data_stream-oper_stepType-{kind}.nc")
                member.unlink()
    tmp.replace(path)
    return path


def _pack_int16(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """ECMWF's grib_to_netcdf packing: int16 spanning the data range, fill -32767."""
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scale = (hi - lo) / 65532 if hi > lo else 1.0   # packed values span -32766..32766
    offset = lo + 32766 * scale
    packed = np.where(np.isfinite(values), np.round((values - offset) / scale), -32767).astype(np.int16)
    return packed, scale, offset


def write_era5land_netcdf3(path: Path, hourly: xr.Dataset) -> Path:
    """The old CDS layout: NETCDF3, ``time`` in hours since 1900, int16 packed per variable.

    When the steps mix final and ERA5T data an ``expver`` dimension (1, 5) is added and each step
    holds values under exactly one of them, as the old CDS delivered mixed requests.
    """
    path = Path(path)
    tmp = _atomic(path)
    times = pd.DatetimeIndex(hourly["valid_time"].values)
    hours = ((times - pd.Timestamp("1900-01-01")) // pd.Timedelta(hours=1)).to_numpy(dtype=np.int32)
    expver = np.asarray(hourly["expver"].values).astype(str)
    mixed = len(set(expver)) > 1
    with netCDF4.Dataset(tmp, "w", format="NETCDF3_64BIT_OFFSET") as nc:
        nc.Conventions = "CF-1.6"
        nc.history = "etfuse synthetic world, old CDS NetCDF3 layout (grib_to_netcdf)"
        nc.createDimension("longitude", hourly.sizes["longitude"])
        nc.createDimension("latitude", hourly.sizes["latitude"])
        if mixed:
            nc.createDimension("expver", 2)
        nc.createDimension("time", len(times))
        lon = nc.createVariable("longitude", "f4", ("longitude",))
        lon.units, lon.long_name = "degrees_east", "longitude"
        lon[:] = hourly["longitude"].values
        lat = nc.createVariable("latitude", "f4", ("latitude",))
        lat.units, lat.long_name = "degrees_north", "latitude"
        lat[:] = hourly["latitude"].values
        if mixed:
            ev = nc.createVariable("expver", "i4", ("expver",))
            ev.long_name = "expver"
            ev[:] = [1, 5]
        t = nc.createVariable("time", "i4", ("time",))
        t.units, t.long_name, t.calendar = "hours since 1900-01-01 00:00:00.0", "time", "gregorian"
        t[:] = hours
        for name in (n for n in ERA5LAND_ATTRS if n in hourly.data_vars):
            values = hourly[name].values.astype(np.float64)
            packed, scale, offset = _pack_int16(values)
            dims = ("time", "expver", "latitude", "longitude") if mixed else ("time", "latitude", "longitude")
            v = nc.createVariable(name, "i2", dims, fill_value=np.int16(-32767))
            v.set_auto_maskandscale(False)
            v.scale_factor, v.add_offset = scale, offset
            v.missing_value = np.int16(-32767)
            v.units, v.long_name = ERA5LAND_ATTRS[name]["units"], ERA5LAND_ATTRS[name]["long_name"]
            if mixed:
                both = np.full((len(times), 2) + packed.shape[1:], -32767, dtype=np.int16)
                both[:, 0][expver == "0001"] = packed[expver == "0001"]
                both[:, 1][expver != "0001"] = packed[expver != "0001"]
                v[:] = both
            else:
                v[:] = packed
    tmp.replace(path)
    return path


def write_era5land_grib(path: Path, hourly: xr.Dataset, *, edition: dict[str, int] | None = None) -> Path:
    """GRIB as CDS delivers ERA5-Land: accumulations as (date D, step 1..24 h) from 00 UTC.

    ``edition`` maps variable names to GRIB edition 1 or 2 (default 1), so one file can mix both.
    """
    import eccodes

    path = Path(path)
    tmp = _atomic(path)
    edition = edition or {}
    lat = hourly["latitude"].values
    lon = hourly["longitude"].values
    times = pd.DatetimeIndex(hourly["valid_time"].values)
    expver = np.asarray(hourly["expver"].values).astype(str)
    with open(tmp, "wb") as out:
        for name in (n for n in ERA5LAND_ATTRS if n in hourly.data_vars):
            ed = edition.get(name, 1)
            accumulated = ERA5LAND_ATTRS[name]["GRIB_stepType"] == "accum"
            for k, when in enumerate(times):
                values = hourly[name].values[k].astype(np.float64)
                gid = eccodes.codes_grib_new_from_samples(f"regular_ll_sfc_grib{ed}")
                try:
                    eccodes.codes_set(gid, "centre", "ecmf")
                    eccodes.codes_set(gid, "setLocalDefinition", 1)    # the MARS section holds expver
                    eccodes.codes_set(gid, "localDefinitionNumber", 1)
                    eccodes.codes_set(gid, "expver", expver[k])
                    eccodes.codes_set(gid, "shortName", _GRIB_SHORT.get(name, name))
                    if accumulated:
                        base = (when - pd.Timedelta(hours=1)).floor("D")
                        step = int((when - base) / pd.Timedelta(hours=1))
                        eccodes.codes_set(gid, "dataDate", int(base.strftime("%Y%m%d")))
                        eccodes.codes_set(gid, "dataTime", 0)
                        eccodes.codes_set(gid, "stepType", "accum")
                        eccodes.codes_set(gid, "startStep", 0 if ed == 2 else step - 1)
                        eccodes.codes_set(gid, "endStep", step)
                    else:
                        eccodes.codes_set(gid, "dataDate", int(when.strftime("%Y%m%d")))
                        eccodes.codes_set(gid, "dataTime", int(when.strftime("%H%M")))
                        eccodes.codes_set(gid, "step", 0)
                    eccodes.codes_set(gid, "Ni", lon.size)
                    eccodes.codes_set(gid, "Nj", lat.size)
                    eccodes.codes_set(gid, "latitudeOfFirstGridPointInDegrees", float(lat[0]))
                    eccodes.codes_set(gid, "latitudeOfLastGridPointInDegrees", float(lat[-1]))
                    eccodes.codes_set(gid, "longitudeOfFirstGridPointInDegrees", float(lon[0]))
                    eccodes.codes_set(gid, "longitudeOfLastGridPointInDegrees", float(lon[-1]))
                    eccodes.codes_set(gid, "iDirectionIncrementInDegrees", float(abs(lon[1] - lon[0])))
                    eccodes.codes_set(gid, "jDirectionIncrementInDegrees", float(abs(lat[1] - lat[0])))
                    eccodes.codes_set(gid, "jScansPositively", 0)
                    missing = ~np.isfinite(values)
                    if missing.any():
                        eccodes.codes_set(gid, "bitmapPresent", 1)
                        eccodes.codes_set(gid, "missingValue", 9999)
                        values = np.where(missing, 9999.0, values)
                    eccodes.codes_set(gid, "bitsPerValue", 24)
                    eccodes.codes_set_values(gid, values.ravel())
                    eccodes.codes_write(gid, out)
                finally:
                    eccodes.codes_release(gid)
    tmp.replace(path)
    return path


def write_gleam_year(path: Path, et_mm: xr.DataArray, *, version: str = "v3.7a",
                     dim_order: tuple[str, str, str] = ("time", "lon", "lat"), fill: float = -999.0) -> Path:
    """One GLEAM file: ``E`` [mm/day] with dims in ``dim_order``, latitude north to south.

    ``et_mm`` has dims ``(time, lat, lon)``; v3 files use ``(time, lon, lat)``, v4 ``(time, lat, lon)``.
    """
    path = Path(path)
    tmp = _atomic(path)
    e = et_mm.transpose(*dim_order)
    values = np.where(np.isfinite(e.values), e.values, fill).astype(np.float32)
    days = pd.DatetimeIndex(et_mm["time"].values)
    with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
        nc.title = f"GLEAM {version} daily actual evaporation (etfuse synthetic world)"
        nc.version = version
        for dim in dim_order:
            nc.createDimension(dim, e.sizes[dim] if dim != "time" else None)
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.calendar, t.standard_name = "days since 1980-01-01 00:00:00", "standard", "time"
        t[:] = ((days - pd.Timestamp("1980-01-01")) / pd.Timedelta(days=1)).to_numpy()
        for axis, units in (("lat", "degrees_north"), ("lon", "degrees_east")):
            v = nc.createVariable(axis, "f4", (axis,))
            v.units, v.standard_name = units, "latitude" if axis == "lat" else "longitude"
            v[:] = e[axis].values
        v = nc.createVariable("E", "f4", dim_order, fill_value=np.float32(fill), zlib=True, complevel=1)
        v.units, v.long_name = "mm/day", "Actual Evaporation"
        v[:] = values
    tmp.replace(path)
    return path
