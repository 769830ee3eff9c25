"""FLUXNET2015 daily (DD) files -> measured actual ET at flux sites.

``FLX_<SITE>_FLUXNET2015_<FULLSET|SUBSET>_DD_<Y1>-<Y2>_<v>.csv``: one row per day, ``TIMESTAMP``
as YYYYMMDD in local standard time, fill value -9999.  The site id comes from the file name; the
site's coordinates and elevation from ``etfuse/data/fluxnet_sites.csv`` (data files carry none).

``LE_F_MDS`` is the day's mean latent heat flux [W m-2], gap-filled by marginal distribution
sampling; ``LE_F_MDS_QC`` in daily files is the fraction [0-1] of measured or good-quality
gap-filled half-hours.  ``LE_CORR`` is ``LE_F_MDS`` scaled for energy-balance closure (it has no
QC column of its own: its quality is that of ``LE_F_MDS``).

The rule (``settings.fluxnet``): LE is ``le_variable`` (``LE_F_MDS`` by default, or ``LE_CORR``;
a file lacking the asked column is refused); a day whose ``LE_F_MDS_QC`` is below
``min_qc_fraction`` (default 0.5) gets no ET (its LE stays in ``latent_heat_flux``); a day without
``LE_F_MDS_QC`` is kept.  ET [mm day-1 = kg m-2] = LE * 86400 s / lambda, with the latent heat of
vaporisation lambda [J kg-1] = (2.501 - 0.002361 * T) * 1e6 at the day's air temperature T [degC]
(``TA_F``, else ``TA_F_MDS``), or 2.45e6 J kg-1 when no temperature is given.  Every FLUXNET2015
site (212) is listed in ``etfuse/data/fluxnet_sites.csv``; files of other sites are refused.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.errors import SourceFormatError
from etfuse.sources import register
from etfuse.sources.common import region_bbox
from etfuse.sources.stations import (clip_to_box, date_column, known_outside, numeric_column, point_dataset,
                                     read_text)
from etfuse.stations_meta import fluxnet_sites
from etfuse.settings import Settings

FILL = -9999.0
SECONDS_PER_DAY = 86400.0
LAMBDA_DEFAULT = 2.45e6                  # [J kg-1] at about 20 degC
TEMPERATURE_COLUMNS = ("TA_F", "TA_F_MDS")   # [degC], first present and non-missing wins
DAY_DEFINITION = "FLUXNET2015 day: 00:00 to 24:00 local standard time of the site"

_NAME = re.compile(r"^FLX_(?P<site>[A-Z]{2}-[A-Za-z0-9]{3})_FLUXNET2015_(?P<set>FULLSET|SUBSET)_"
                   r"(?P<res>[A-Z]{2})_(?P<y1>\d{4})-(?P<y2>\d{4})_(?P<version>\d+-\d+)\.csv$", re.IGNORECASE)
_NAME_EXPECTED = "FLX_<SITE>_FLUXNET2015_<FULLSET|SUBSET>_DD_<Y1>-<Y2>_<v>.csv, e.g. FLX_CN-HaM_FLUXNET2015_FULLSET_DD_2002-2004_1-4.csv"

EXTRAS: dict[str, dict[str, str]] = {
    "latent_heat_flux": {"units": "W m-2", "cell_methods": "time: mean",
                         "long_name": "latent heat flux, daily mean, gap-filled (FLUXNET2015 LE_F_MDS or LE_CORR, "
                                      "as the attribute le_variable says), before the QC filter"},
    "qc_fraction": {"units": "1", "long_name": "fraction of measured or good-quality gap-filled half-hours "
                                               "in the day (FLUXNET2015 LE_F_MDS_QC)"},
}


def site_from_name(path: Path) -> str:
    """The FLUXNET site id (e.g. CN-HaM) from a daily file's name; other names or resolutions are errors."""
    match = _NAME.match(path.name)
    if match is None:
        raise SourceFormatError(path, "file name is not a FLUXNET2015 file name", expected=_NAME_EXPECTED,
                                found=path.name, hint="keep the name FLUXNET delivers: the site id comes from it")
    if match["res"].upper() != "DD":
        raise SourceFormatError(path, "not a daily FLUXNET2015 file", expected="resolution DD",
                                found=match["res"], hint="this reader takes the daily (DD) product only")
    return match["site"]


def latent_heat_of_vaporisation(t_degc: np.ndarray) -> np.ndarray:
    """lambda [J kg-1] = (2.501 - 0.002361 * T [degC]) * 1e6; 2.45e6 where T is missing."""
    t = np.asarray(t_degc, dtype=np.float64)
    return np.where(np.isnan(t), LAMBDA_DEFAULT, (2.501 - 0.002361 * t) * 1e6)


def le_to_et(le_w_m2: np.ndarray, t_degc: np.ndarray) -> np.ndarray:
    """Daily mean latent heat flux [W m-2] -> daily ET [mm = kg m-2]."""
    return np.asarray(le_w_m2, dtype=np.float64) * SECONDS_PER_DAY / latent_heat_of_vaporisation(t_degc)


def _site_location(site: str, path: Path) -> tuple[float, float, float]:
    sites = fluxnet_sites().set_index("site_id")
    if site not in sites.index:
        raise SourceFormatError(path, f"unknown FLUXNET site {site!r}",
                                expected=f"one of the {len(sites)} FLUXNET2015 sites of etfuse/data/fluxnet_sites.csv "
                                         f"(e.g. CN-HaM, CN-Ha2, US-Ha1)",
                                found=site, hint="add the site (site_id,name,lat,lon,elevation_m,igbp,elevation_source) "
                                                 "to etfuse/data/fluxnet_sites.csv")
    row = sites.loc[site]
    return float(row["lat"]), float(row["lon"]), float(row["elevation_m"])


def _fluxnet_frame(path: Path, le_variable: str = "LE_F_MDS", min_qc_fraction: float = 0.0) -> pd.DataFrame:
    """One daily file -> the per-file point frame (ET from ``le_variable``, NaN below ``min_qc_fraction``)."""
    site = site_from_name(path)
    lat, lon, elevation = _site_location(site, path)
    text = read_text(path)
    header = [c.strip() for c in text.split("\n", 1)[0].strip().split(",")]
    missing = [c for c in ("TIMESTAMP", "LE_F_MDS") if c not in header]
    if missing:
        raise SourceFormatError(path, f"missing column(s) {missing}", expected="TIMESTAMP and LE_F_MDS (FULLSET or SUBSET)",
                                found=header[:10] + (["..."] if len(header) > 10 else []))
    if le_variable not in header:
        raise SourceFormatError(path, f"missing column {le_variable}", variable=le_variable,
                                expected=f"{le_variable} (settings.fluxnet.le_variable)",
                                found=header[:10] + (["..."] if len(header) > 10 else []),
                                hint="set fluxnet.le_variable to LE_F_MDS to read the uncorrected flux")
    wanted = {"TIMESTAMP", "LE_F_MDS", "LE_F_MDS_QC", le_variable, *TEMPERATURE_COLUMNS}
    raw = pd.read_csv(io.StringIO(text), usecols=lambda c: c.strip() in wanted, dtype=str,
                      keep_default_na=False, na_values=[""])
    raw.columns = [c.strip() for c in raw.columns]
    if raw.empty:
        raise SourceFormatError(path, "no data rows", expected="one row per day")
    lines = np.arange(len(raw)) + 2

    def values(name: str) -> np.ndarray:
        if name not in raw.columns:
            return np.full(len(raw), np.nan)
        v = numeric_column(raw[name], path, name, lines)
        return np.where(v == FILL, np.nan, v)

    temperature = np.full(len(raw), np.nan)
    for name in TEMPERATURE_COLUMNS:
        temperature = np.where(np.isnan(temperature), values(name), temperature)
    le = values(le_variable)
    qc = values("LE_F_MDS_QC")
    bad = ~np.isnan(qc) & ((qc < 0) | (qc > 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SourceFormatError(path, f"line {lines[i]}: LE_F_MDS_QC outside 0..1", variable="LE_F_MDS_QC",
                                expected="a fraction of good half-hours (daily files)", found=f"{qc[i]:g}")
    n = len(raw)
    et = le_to_et(le, temperature)
    et[~np.isnan(qc) & (qc < min_qc_fraction)] = np.nan
    return pd.DataFrame({
        "station_id": np.full(n, site, dtype=object),
        "time": date_column(raw["TIMESTAMP"], path, "TIMESTAMP", lines, fmt="%Y%m%d"),
        "lat": np.full(n, lat), "lon": np.full(n, lon), "elevation_m": np.full(n, elevation),
        "et": et.astype(np.float32),
        "latent_heat_flux": le.astype(np.float32),
        "qc_fraction": qc.astype(np.float32),
    })


@register("fluxnet", "stations", "FLUXNET2015 daily (DD) files: LE_F_MDS -> et through the latent heat of vaporisation")
def read_fluxnet(paths: Sequence[Path], *, settings: Settings, bbox=None) -> xr.Dataset:
    """Daily actual ET [kg m-2] at FLUXNET2015 sites, as a CF point dataset."""
    box = region_bbox(settings, bbox)
    rule = settings.fluxnet
    raw = [_fluxnet_frame(p, rule.le_variable, rule.min_qc_fraction) for p in paths]
    parts = [clip_to_box(frame, box, p).assign(_file=str(p)) for frame, p in zip(raw, paths)]
    ds = point_dataset(pd.concat(parts, ignore_index=True), source="fluxnet", paths=paths, extras=EXTRAS,
                       known_stations_outside_region=known_outside(raw, box),
                       day_definition=DAY_DEFINITION,
                       title="FLUXNET2015 daily evapotranspiration from latent heat flux, harmonised by etfuse")
    ds["et"].attrs["comment"] = (f"et = {rule.le_variable} * 86400 / lambda, lambda = (2.501 - 0.002361 * TA_F) * 1e6 "
                                 "J kg-1 (TA_F_MDS if TA_F is missing, 2.45e6 J kg-1 without temperature); missing "
                                 f"where LE_F_MDS_QC < {rule.min_qc_fraction:g}")
    ds.attrs["le_variable"] = rule.le_variable
    ds.attrs["min_qc_fraction"] = float(rule.min_qc_fraction)
    return ds
