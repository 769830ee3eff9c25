"""ERA5-Land hourly files -> daily totals and means.

Formats handled (docs/data-formats.md): the new CDS NetCDF (``valid_time``, ``expver`` per step), the old
packed NetCDF3 (``time`` in hours since 1900, int16 with scale/offset, optional ``expver``
dimension), GRIB (``(time, step)`` cubes, editions 1 and 2 mixed in one file), and ZIP archives with
a ``.nc`` name holding one or more of those.

Every file is first brought to one hourly form, ``(valid_time, lat, lon)`` with the ERA5 stream of
each step, and only then turned into days, so the daily rule exists once:

* accumulations (``e``, ``tp``, ``ssr``, ``str``) run from 00 UTC, so the value stamped 00 UTC of
  day D+1 is the total of day D;
* instantaneous fields (``skt``, ``t2m``) are averaged over the 24 steps 00..23 UTC of day D.

A variable of a day is produced only when all the steps it needs are present: partial days are
never invented.  ``has_<var>(time)`` tells which variables each day holds, so a later file can
complete a day (monthly CDS requests split the last day of a month across two files).
"""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.cf import annotate
from etfuse.errors import SourceFormatError
from etfuse.settings import Settings
from etfuse.sources import register
from etfuse.sources.common import clip, region_bbox, require_units, standard_latlon

#: ERA5 experiment versions: final data and the preliminary ERA5T stream.
STREAMS = {"0001": "final", "1": "final", "0005": "ERA5T", "5": "ERA5T"}

_M_UNITS = ("m", "m of water equivalent", "m of water")
_J_UNITS = ("J m**-2", "J m-2", "J/m2", "J m^-2")
_K_UNITS = ("K",)

ACCUMULATED = ("e", "tp", "ssr", "str")
INSTANTANEOUS = ("skt", "t2m")


@dataclass(frozen=True)
class DailyRule:
    """How one harmonised variable is made from ERA5-Land short names."""

    inputs: tuple[str, ...]
    units: tuple[str, ...]
    accumulated: bool
    #: converts the provider values (accumulated at D+1 00 UTC, or the 24-h mean) to our units
    convert: Callable[..., xr.DataArray]


RULES: dict[str, DailyRule] = {
    # e: metres of water, negative = evaporation  ->  kg m-2 (= mm), positive = evaporation
    "et": DailyRule(("e",), _M_UNITS, True, lambda e: -1000.0 * e),
    "precipitation": DailyRule(("tp",), _M_UNITS, True, lambda tp: 1000.0 * tp),
    # ssr + str: J m-2 accumulated  ->  MJ m-2
    "net_radiation": DailyRule(("ssr", "str"), _J_UNITS, True, lambda ssr, str_: (ssr + str_) / 1e6),
    "skt": DailyRule(("skt",), _K_UNITS, False, lambda x: x),
    "t2m": DailyRule(("t2m",), _K_UNITS, False, lambda x: x),
}


# --------------------------------------------------------------------------- file -> hourly form
def _kind(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] == b"GRIB":
        return "grib"
    if head[:3] == b"CDF":
        return "netcdf3"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "netcdf4"
    if head[:2] == b"PK" and zipfile.is_zipfile(path):
        return "zip"
    raise SourceFormatError(path, "unrecognised file format", expected="NetCDF3, NetCDF4/HDF5, GRIB or a ZIP of those",
                            found=f"first bytes {head!r}" if head else "an empty file")


def _stream_of(expver: object) -> str:
    text = str(expver).strip()
    return STREAMS.get(text, STREAMS.get(text.lstrip("0") or "0", "unknown"))


def _hourly_from_netcdf(path: Path) -> xr.Dataset:
    try:
        ds = xr.open_dataset(path, engine="netcdf4", mask_and_scale=True, decode_times=True)
        ds.load()
    except (OSError, RuntimeError, ValueError) as exc:
        raise SourceFormatError(path, f"cannot be read as NetCDF ({exc})",
                                hint="the file may be truncated or not NetCDF despite its name") from exc
    ds.close()
    if "valid_time" in ds.dims:                              # new CDS layout
        time_dim = "valid_time"
    elif "time" in ds.dims:                                  # old CDS layout
        time_dim = "time"
    else:
        raise SourceFormatError(path, "no time dimension", expected="'valid_time' (new CDS) or 'time' (old CDS)",
                                found=sorted(map(str, ds.dims)))
    if "expver" in ds.dims:                                  # old mixed ERA5/ERA5T request
        versions = [str(v) for v in ds["expver"].values]
        parts = [ds.sel(expver=v, drop=True) for v in ds["expver"].values]
        streams = np.full(ds.sizes[time_dim], "unknown", dtype=object)
        merged = None
        data_vars = [n for n in ds.data_vars]
        for version, part in zip(versions, parts):
            has = np.zeros(ds.sizes[time_dim], dtype=bool)
            for name in data_vars:
                has |= part[name].notnull().any([d for d in part[name].dims if d != time_dim]).values
            unset = (streams == "unknown") & has
            streams[unset] = _stream_of(version)
            merged = part if merged is None else merged.combine_first(part)
        ds = merged.assign_coords(expver_stream=(time_dim, streams.astype(str)))
    elif "expver" in ds.coords:
        streams = np.array([_stream_of(v) for v in np.atleast_1d(ds["expver"].values)])
        if streams.size == 1:
            streams = np.repeat(streams, ds.sizes[time_dim])
        ds = ds.drop_vars("expver").assign_coords(expver_stream=(time_dim, streams))
    else:
        ds = ds.assign_coords(expver_stream=(time_dim, np.full(ds.sizes[time_dim], "unknown")))
    ds = ds.drop_vars([c for c in ("number", "step", "surface") if c in ds.coords])
    if time_dim != "valid_time":
        ds = ds.rename({time_dim: "valid_time"})
    return ds


#: GRIB shortNames that differ from the NetCDF/cfgrib variable names
_GRIB_NAMES = {"2t": "t2m", "2d": "d2m", "10u": "u10", "10v": "v10"}


def _hourly_from_grib(path: Path) -> xr.Dataset:
    """Read every message with ecCodes in one pass (editions 1 and 2 alike).

    Keyed by each message's validity time.  ERA5-Land GRIB1 labels hourly accumulations with
    ``stepRange`` "h-1 - h" although the values are accumulated since 00 UTC (checked against the
    NetCDF of the same request), so the values are taken as they are, never differenced.
    """
    import eccodes  # imported here: loads the ecCodes C library

    fields: dict[str, dict[np.datetime64, np.ndarray]] = {}
    units: dict[str, str] = {}
    streams: dict[np.datetime64, str] = {}
    grid: tuple | None = None
    count = 0
    try:
        with open(path, "rb") as f:
            while (gid := eccodes.codes_grib_new_from_file(f)) is not None:
                try:
                    count += 1
                    get = lambda key: eccodes.codes_get(gid, key)  # noqa: E731
                    if get("gridType") != "regular_ll":
                        raise SourceFormatError(path, "unsupported GRIB grid", expected="regular_ll",
                                                found=get("gridType"), variable=get("shortName"))
                    this_grid = (get("Ni"), get("Nj"), get("latitudeOfFirstGridPointInDegrees"),
                                 get("latitudeOfLastGridPointInDegrees"), get("longitudeOfFirstGridPointInDegrees"),
                                 get("longitudeOfLastGridPointInDegrees"), get("iScansNegatively"))
                    if grid is None:
                        grid = this_grid
                    elif this_grid != grid:
                        raise SourceFormatError(path, "messages on different grids", variable=get("shortName"),
                                                expected=str(grid), found=str(this_grid))
                    name = _GRIB_NAMES.get(get("shortName"), get("shortName"))
                    date, hhmm = str(get("validityDate")), int(get("validityTime"))
                    when = np.datetime64(f"{date[:4]}-{date[4:6]}-{date[6:]}T{hhmm // 100:02d}:{hhmm % 100:02d}", "ns")
                    values = eccodes.codes_get_values(gid).astype(np.float32)
                    if get("bitmapPresent"):
                        values[values == np.float32(get("missingValue"))] = np.nan
                    fields.setdefault(name, {}).setdefault(when, values.reshape(get("Nj"), get("Ni")))
                    units.setdefault(name, str(get("units")))
                    stream = _stream_of(get("expver")) if eccodes.codes_is_defined(gid, "expver") else "unknown"
                    if streams.get(when, stream) != stream:
                        stream = "ERA5T" if "ERA5T" in (stream, streams[when]) else "unknown"
                    streams[when] = stream
                finally:
                    eccodes.codes_release(gid)
    except SourceFormatError:
        raise
    except Exception as exc:  # ecCodes raises its own types for truncated or corrupt messages
        raise SourceFormatError(path, f"cannot be read as GRIB after {count} messages ({type(exc).__name__}: {exc})",
                                hint="the file may be truncated") from exc
    if grid is None:
        raise SourceFormatError(path, "the GRIB file holds no messages")
    ni, nj, lat0, lat1, lon0, lon1, i_neg = grid
    lat = np.linspace(lat0, lat1, nj)
    lon = np.linspace(lon0, lon1, ni)
    if i_neg:
        lon = lon[::-1]
    times = np.array(sorted(streams))
    data_vars = {}
    for name, by_time in fields.items():
        arr = np.full((len(times), nj, ni), np.nan, dtype=np.float32)
        for k, when in enumerate(times):
            if when in by_time:
                arr[k] = by_time[when]
        data_vars[name] = xr.DataArray(arr, dims=("valid_time", "lat", "lon"), attrs={"units": units[name]})
    return xr.Dataset(data_vars, coords={"valid_time": times, "lat": lat, "lon": lon,
                                         "expver_stream": ("valid_time", [streams[t] for t in times])})


def _merge_hourly(parts: list[xr.Dataset], path: Path) -> xr.Dataset:
    """Union of hourly parts (different variables or periods); overlapping steps must agree."""
    merged: xr.Dataset | None = None
    for part in parts:
        part = part.sortby("valid_time")
        _, unique = np.unique(part["valid_time"].values, return_index=True)
        part = part.isel(valid_time=np.sort(unique))
        if merged is None:
            merged = part
            continue
        streams = pd.concat([merged["expver_stream"].to_series(), part["expver_stream"].to_series()])
        streams = streams[~streams.index.duplicated(keep="first")].sort_index()
        merged = merged.drop_vars("expver_stream").combine_first(part.drop_vars("expver_stream"))
        merged = merged.assign_coords(expver_stream=("valid_time", streams.reindex(merged["valid_time"].values)
                                                     .fillna("unknown").to_numpy(dtype=object).astype(str)))
    assert merged is not None
    return merged


def hourly(path: Path) -> xr.Dataset:
    """One provider file (or ZIP of files) as ``(valid_time, lat, lon)`` plus ``expver_stream``."""
    kind = _kind(path)
    if kind == "zip":
        with tempfile.TemporaryDirectory(prefix="etfuse-era5-") as tmp, zipfile.ZipFile(path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if not members:
                raise SourceFormatError(path, "the ZIP archive is empty", expected="one or more data_*.nc or .grib members")
            parts = []
            for i, member in enumerate(members):
                target = Path(tmp) / f"{i}_{Path(member.filename).name}"   # never trust member paths
                with zf.open(member) as src, open(target, "wb") as dst:
                    dst.write(src.read())
                try:
                    parts.append(hourly(target))
                except SourceFormatError as exc:
                    raise SourceFormatError(path, f"ZIP member {member.filename!r}: {exc}") from exc
        return _merge_hourly(parts, path)
    ds = _hourly_from_grib(path) if kind == "grib" else _hourly_from_netcdf(path)
    ds = standard_latlon(ds, path)
    ds = ds.sortby("valid_time")
    _, unique = np.unique(ds["valid_time"].values, return_index=True)
    return ds.isel(valid_time=np.sort(unique))


# --------------------------------------------------------------------------- hourly -> daily
def _check_hourly_steps(ds: xr.Dataset, path: Path) -> None:
    times = pd.DatetimeIndex(ds["valid_time"].values)
    if len(times) < 1:
        raise SourceFormatError(path, "no time steps in the file")
    if (times != times.floor("h")).any():
        raise SourceFormatError(path, "valid times are not on whole hours", found=str(times[times != times.floor("h")][:3].tolist()))
    if len(times) > 1:
        steps_h = np.diff(times.values).astype("timedelta64[s]").astype(np.int64) / 3600.0
        if steps_h.min() > 1:
            raise SourceFormatError(
                path, "not hourly data", expected="steps of 1 h (hourly ERA5-Land)",
                found=f"steps of {steps_h.min():g} to {steps_h.max():g} h",
                hint="daily totals need the hourly product (reanalysis-era5-land), not monthly means")


def daily(ds: xr.Dataset, path: Path) -> xr.Dataset:
    """Daily harmonised variables from the hourly form; see the module docstring for the rules."""
    _check_hourly_steps(ds, path)
    times = pd.DatetimeIndex(ds["valid_time"].values)
    streams = ds["expver_stream"].values.astype(str)
    present = {name: rule for name, rule in RULES.items() if all(v in ds.data_vars for v in rule.inputs)}
    if not present:
        swapped = [v for v in ("evabs", "evaow", "evavt") if v in ds.data_vars]
        raise SourceFormatError(
            path, "no variable this system uses",
            expected="any of e (total evaporation), tp, ssr+str, skt, t2m",
            found=sorted(map(str, ds.data_vars)),
            hint="use the total evaporation 'e': evabs/evaow/evavt are known to be swapped in ERA5-Land" if swapped else None)
    for rule in present.values():
        for name in rule.inputs:
            require_units(ds[name], rule.units, path, name)

    fields: dict[str, dict[pd.Timestamp, np.ndarray]] = {}
    day_streams: dict[pd.Timestamp, set[str]] = {}
    for name, rule in present.items():
        fields[name] = {}
        if rule.accumulated:
            # complete wherever every input has its 00 UTC step of the next day
            ok = np.ones(len(times), dtype=bool)
            for v in rule.inputs:
                ok &= ds[v].notnull().any(["lat", "lon"]).values
            for i in np.flatnonzero((times.hour == 0) & ok):
                day = times[i] - pd.Timedelta(days=1)
                values = rule.convert(*[ds[v].isel(valid_time=i) for v in rule.inputs])
                fields[name][day] = values.values.astype(np.float32)
                day_streams.setdefault(day, set()).add(str(streams[i]))
        else:
            da = ds[rule.inputs[0]]
            has = da.notnull().any(["lat", "lon"]).values
            days = times.floor("D")
            for day in pd.unique(days):
                idx = np.flatnonzero((days == day) & has)
                if len(idx) != 24:
                    continue
                values = rule.convert(da.isel(valid_time=idx).mean("valid_time"))
                fields[name][day] = values.values.astype(np.float32)
                day_streams.setdefault(day, set()).update(map(str, streams[idx]))
    all_days = sorted(day_streams)
    if not all_days:
        raise SourceFormatError(path, "no complete day in the file",
                                expected="for a day D: the 00 UTC step of D+1 (accumulations) or all 24 steps of D",
                                found=f"steps {times[0]} .. {times[-1]}")
    shape = (len(all_days), ds.sizes["lat"], ds.sizes["lon"])
    data_vars = {}
    coords: dict[str, tuple] = {}
    for name, by_day in fields.items():
        arr = np.full(shape, np.nan, dtype=np.float32)
        has = np.zeros(len(all_days), dtype=bool)
        for k, day in enumerate(all_days):
            if day in by_day:
                arr[k] = by_day[day]
                has[k] = True
        data_vars[name] = (("time", "lat", "lon"), arr)
        coords[f"has_{name}"] = ("time", has)
    stream_per_day = []
    for day in all_days:
        s = day_streams[day]
        stream_per_day.append("ERA5T" if "ERA5T" in s else "final" if s == {"final"} else "unknown")
    out_ds = xr.Dataset(data_vars, coords={"time": pd.DatetimeIndex(all_days), "lat": ds["lat"].values,
                                           "lon": ds["lon"].values, "era5_stream": ("time", stream_per_day),
                                           **coords})
    out_ds["era5_stream"].attrs["long_name"] = "ERA5 stream of the steps used: final, ERA5T (preliminary) or unknown"
    return out_ds


@register("era5land", "grid", "ERA5-Land hourly (new/old CDS NetCDF, GRIB, ZIP) -> daily et, net_radiation, skt, t2m, precipitation")
def read_era5land(paths: Sequence[Path], *, settings: Settings, bbox=None) -> xr.Dataset:
    """Daily ERA5-Land fields from one or more hourly files, clipped to the region (plus margin).

    Several files are combined at the hourly level first, so a day whose steps are split across
    files (e.g. the 00 UTC step of the next month) is still complete.
    """
    box = region_bbox(settings, bbox)
    parts = [clip(hourly(p), box, p) for p in paths]
    label = paths[0] if len(paths) == 1 else Path(f"{paths[0]} (+{len(paths) - 1} files)")
    ds = parts[0] if len(parts) == 1 else _merge_hourly(parts, label)
    out = daily(ds, label)
    return annotate(out, source="era5land", source_files=" ".join(p.name for p in paths),
                    title="ERA5-Land daily fields harmonised by etfuse")
