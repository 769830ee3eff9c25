"""Station facts (coordinates, elevation) carried by the project, and station tables as frames.

The facts tables live in ``etfuse/data`` (see its README for their origin):

* ``cma_stations_qinghai.csv``: the CMA national stations in Qinghai, decimal degrees, elevation [m];
* ``fluxnet_sites.csv``: every FLUXNET2015 site (212): id, name, lat, lon, elevation, IGBP class.

Readers use them when a file names a station without giving its coordinates (plain station tables,
FLUXNET files, whose coordinates live in the site list, not in the data file).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd
import xarray as xr

#: Columns of a station table as written by the CLI (one row per station-day).
FRAME_COLUMNS = ("station_id", "date", "lat", "lon", "elevation_m", "et_mm")


@lru_cache(maxsize=None)
def _read_facts(name: str) -> pd.DataFrame:
    with resources.files("etfuse.data").joinpath(name).open("rb") as f:
        return pd.read_csv(f, dtype={"station_id": str, "site_id": str})


def cma_stations() -> pd.DataFrame:
    """CMA Qinghai stations: ``station_id`` (str), name, station_class, lat, lon [degrees], elevation_m [m]."""
    return _read_facts("cma_stations_qinghai.csv").copy()


def fluxnet_sites() -> pd.DataFrame:
    """FLUXNET2015 sites: ``site_id`` (str, e.g. CN-HaM), name, lat, lon [degrees], elevation_m [m], igbp, elevation_source."""
    return _read_facts("fluxnet_sites.csv").copy()


def known_locations() -> pd.DataFrame:
    """Every station and site the project knows, indexed by ``station_id``: lat, lon [degrees], elevation_m [m].

    CMA ids are digits and FLUXNET ids are ``CC-XXX``, so the two tables never collide.
    """
    cma = cma_stations()[["station_id", "lat", "lon", "elevation_m"]]
    flx = fluxnet_sites().rename(columns={"site_id": "station_id"})[["station_id", "lat", "lon", "elevation_m"]]
    table = pd.concat([cma, flx], ignore_index=True)
    table["station_id"] = table["station_id"].astype(str).str.strip()
    return table.drop_duplicates("station_id").set_index("station_id")


def degree_minutes_to_degrees(v):
    """CMA ``degrees*100 + minutes`` (e.g. 3644 = 36 deg 44 min) -> decimal degrees.

    Works on scalars and arrays; the sign applies to the whole value.  Minutes of 60 or more are
    not a degree-minute value and raise ``ValueError``.
    """
    a = np.asarray(v, dtype=np.float64)
    mag = np.abs(a)
    degrees = np.floor(mag / 100.0)
    minutes = mag - 100.0 * degrees
    if np.any(minutes >= 60):
        bad = a[minutes >= 60] if a.ndim else a
        raise ValueError(f"not degrees*100+minutes: minutes >= 60 in {np.atleast_1d(bad)[:5].tolist()}")
    out = np.sign(a) * (degrees + minutes / 60.0)
    return float(out) if out.ndim == 0 else out


def degrees_to_degree_minutes(v):
    """Decimal degrees -> CMA ``degrees*100 + minutes`` integers (minutes rounded)."""
    a = np.asarray(v, dtype=np.float64)
    mag = np.abs(a)
    total_minutes = np.rint(mag * 60.0).astype(np.int64)
    out = np.sign(a).astype(np.int64) * (total_minutes // 60 * 100 + total_minutes % 60)
    return int(out) if out.ndim == 0 else out


def stations_to_frame(ds: xr.Dataset) -> pd.DataFrame:
    """A station point dataset (dimension ``obs``) as the CSV frame ``station_id,date,lat,lon,elevation_m,et_mm``.

    ``et`` is in kg m-2, which equals mm; ``date`` is the observation day as ``YYYY-MM-DD``.
    """
    return pd.DataFrame({
        "station_id": ds["station_id"].values.astype(str),
        "date": pd.DatetimeIndex(ds["time"].values).strftime("%Y-%m-%d"),
        "lat": ds["lat"].values.astype(np.float64),
        "lon": ds["lon"].values.astype(np.float64),
        "elevation_m": ds["elevation_m"].values.astype(np.float64),
        "et_mm": ds["et"].values.astype(np.float64),
    }, columns=list(FRAME_COLUMNS))
