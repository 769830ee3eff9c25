"""GLEAM daily actual evaporation (``E``) -> ``et`` [kg m-2].

One file per variable and year (``E_<YYYY>_GLEAM_v3.7a.nc``, ``E_<YYYY>_GLEAM_v4.2a.nc``).  Older
files store ``E(time, lon, lat)``, newer ones ``E(time, lat, lon)``; latitude runs north to south;
fill is -999 or NaN.  Everything is addressed by name, never by axis position.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.cf import annotate
from etfuse.errors import SourceFormatError
from etfuse.settings import Settings
from etfuse.sources import register
from etfuse.sources.common import clip, region_bbox, require_units, standard_latlon

#: GLEAM spells mm/day several ways across versions.
MM_PER_DAY = ("mm/day", "mm day-1", "mm d-1", "mm/d", "mm.d-1", "mm day^-1", "kg m-2 day-1", "kg m-2 d-1")
FILL_VALUES = (-999.0, -9999.0)
_NAME = re.compile(r"^(?P<var>[A-Za-z]+)_(?P<year>\d{4})_GLEAM_(?P<version>v\d+\.\d+[a-z]?)\.nc$")


def gleam_version(path: Path) -> str | None:
    """``v3.7a`` from ``E_2020_GLEAM_v3.7a.nc``; None when the name does not follow GLEAM's pattern."""
    m = _NAME.match(path.name)
    return m.group("version") if m else None


def _open_one(path: Path, box) -> xr.Dataset:
    try:
        ds = xr.open_dataset(path, engine="netcdf4", decode_times=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise SourceFormatError(path, f"cannot be read as NetCDF ({exc})",
                                hint="the file may be truncated or not NetCDF") from exc
    try:
        if "E" not in ds.data_vars:
            raise SourceFormatError(path, "no actual evaporation variable", variable="E",
                                    expected="variable 'E' (GLEAM actual evaporation)",
                                    found=sorted(map(str, ds.data_vars)))
        if "time" not in ds["E"].dims:
            raise SourceFormatError(path, "E has no time dimension", variable="E", expected="dims including 'time'",
                                    found=ds["E"].dims)
        require_units(ds["E"], MM_PER_DAY, path, "E")
        ds = standard_latlon(ds[["E"]], path)
        ds = clip(ds, box, path)
        e = ds["E"].transpose("time", "lat", "lon").load()
    finally:
        ds.close()
    values = e.values.astype(np.float32)
    for fill in FILL_VALUES:
        values[values == fill] = np.nan
    days = pd.DatetimeIndex(e["time"].values)
    if (days != days.floor("D")).any():
        # GLEAM stamps days at 00:00; some tools write noon.  Both name the same UTC day.
        days = days.floor("D")
    if days.has_duplicates:
        raise SourceFormatError(path, "duplicate days", variable="time",
                                found=str(days[days.duplicated()][:3].tolist()))
    return xr.Dataset({"et": (("time", "lat", "lon"), values)},
                      coords={"time": days, "lat": e["lat"].values, "lon": e["lon"].values})


@register("gleam", "grid", "GLEAM v3/v4 daily E (either dimension order) -> daily et")
def read_gleam(paths: Sequence[Path], *, settings: Settings, bbox=None) -> xr.Dataset:
    """Daily GLEAM ET clipped to the region (plus margin); several yearly files are concatenated."""
    box = region_bbox(settings, bbox)
    parts = [_open_one(p, box) for p in paths]
    ds = parts[0] if len(parts) == 1 else xr.concat(parts, dim="time", join="exact")
    days = pd.DatetimeIndex(ds["time"].values)
    if days.has_duplicates:
        raise SourceFormatError(paths[0], "the files overlap in time",
                                found=str(days[days.duplicated()][:3].tolist()))
    ds = ds.sortby("time")
    ds["et"].attrs["gleam_variable"] = "E"
    versions = sorted({v for v in (gleam_version(p) for p in paths) if v})
    return annotate(ds, source="gleam", source_files=" ".join(p.name for p in paths),
                    gleam_version=" ".join(versions) or "unknown",
                    title="GLEAM daily actual evaporation harmonised by etfuse")
