"""Helpers shared by the gridded readers: coordinate names, orientation, clipping, day labels."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.errors import NoOverlapError, SourceFormatError
from etfuse.settings import Settings

_LAT_NAMES = ("lat", "latitude", "y")
_LON_NAMES = ("lon", "longitude", "x")


def region_bbox(settings: Settings, bbox=None) -> tuple[float, float, float, float]:
    """The clipping box: ``bbox`` if given, else the region widened by its margin [degrees]."""
    if bbox is not None:
        return tuple(float(v) for v in bbox)  # type: ignore[return-value]
    r = settings.region
    m = r.margin_deg
    return (r.lon_min - m, r.lat_min - m, r.lon_max + m, r.lat_max + m)


def standard_latlon(ds: xr.Dataset, path: Path | str) -> xr.Dataset:
    """Rename the horizontal coordinates to ``lat``/``lon``; latitude descending, longitude ascending."""
    lat = next((n for n in _LAT_NAMES if n in ds.coords or n in ds.dims), None)
    lon = next((n for n in _LON_NAMES if n in ds.coords or n in ds.dims), None)
    if lat is None or lon is None:
        raise SourceFormatError(path, "no latitude/longitude coordinates", expected=f"one of {_LAT_NAMES} and one of {_LON_NAMES}",
                                found=sorted(map(str, ds.coords)) + sorted(map(str, ds.dims)))
    ds = ds.rename({lat: "lat", lon: "lon"}) if (lat, lon) != ("lat", "lon") else ds
    if ds["lat"].ndim != 1 or ds["lon"].ndim != 1:
        raise SourceFormatError(path, "latitude/longitude must be 1-D (a regular lat/lon grid)",
                                found=f"lat{ds['lat'].shape} lon{ds['lon'].shape}")
    if ds.sizes["lat"] > 1 and float(ds["lat"][0]) < float(ds["lat"][-1]):
        ds = ds.isel(lat=slice(None, None, -1))
    if ds.sizes["lon"] > 1 and float(ds["lon"][0]) > float(ds["lon"][-1]):
        ds = ds.isel(lon=slice(None, None, -1))
    return ds.assign_coords(lat=ds["lat"].astype(np.float64), lon=ds["lon"].astype(np.float64))


def clip(ds: xr.Dataset, bbox: tuple[float, float, float, float], path: Path | str) -> xr.Dataset:
    """Keep source cells whose centres fall inside ``bbox`` widened by half a source cell."""
    west, south, east, north = bbox
    half_lat = abs(float(ds["lat"][1] - ds["lat"][0])) / 2 if ds.sizes["lat"] > 1 else 0.0
    half_lon = abs(float(ds["lon"][1] - ds["lon"][0])) / 2 if ds.sizes["lon"] > 1 else 0.0
    lat = ds["lat"].values
    lon = ds["lon"].values
    keep_lat = (lat >= south - half_lat) & (lat <= north + half_lat)
    keep_lon = (lon >= west - half_lon) & (lon <= east + half_lon)
    if not keep_lat.any() or not keep_lon.any():
        raise NoOverlapError(
            path, "the file does not overlap the region",
            expected=f"data inside lon {west:g}..{east:g}, lat {south:g}..{north:g}",
            found=f"lon {lon.min():g}..{lon.max():g}, lat {lat.min():g}..{lat.max():g}",
            hint="check the region settings, or pass --bbox to harmonise another area")
    return ds.isel(lat=np.flatnonzero(keep_lat), lon=np.flatnonzero(keep_lon))


def as_days(times: Iterable) -> pd.DatetimeIndex:
    """Timestamps floored to their UTC day, as datetime64[ns]."""
    return pd.DatetimeIndex(pd.to_datetime(list(times))).floor("D")


def file_digest(path: Path | str, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file's bytes (any ``hashlib`` algorithm), read in blocks of ``chunk`` bytes."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, the one fingerprint of raw files, product files and models in etfuse."""
    return file_digest(path, "sha256", chunk)


def require_units(da: xr.DataArray, accepted: Iterable[str], path: Path | str, variable: str) -> str:
    """Return the variable's ``units`` if it is one of ``accepted``; never guess from magnitudes."""
    units = str(da.attrs.get("units", "")).strip()
    accepted = tuple(accepted)
    if units not in accepted:
        raise SourceFormatError(path, "unexpected units", variable=variable, expected=f"one of {accepted}",
                                found=repr(units) if units else "no units attribute",
                                hint="the reader does not infer units from magnitudes; fix the file's attributes")
    return units
