"""Writers of station files in the providers' own layouts (docs/data-formats.md).

For the synthetic world and tests: whatever they write is read by the same reader code as real
deliveries (``etfuse.sources.cma``, ``stations``, ``fluxnet``), so each mirrors the real layout:

* CMA SURF_CLI_CHN_MUL_DAY V3.0 EVP monthly text: 11 integer columns, degree-minute coordinates,
  0.1 m elevation (+100000 when estimated), 0.1 mm pans, 32766 missing, 32700 trace, QC 8 where
  missing;
* the plain station table ``station_id,date,et_mm[,lat,lon,elevation_m]``;
* FLUXNET2015 daily (DD) CSV: ``TIMESTAMP`` YYYYMMDD, a realistic subset of the FULLSET header,
  -9999 for every missing value.

Files are written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from etfuse.stations_meta import degrees_to_degree_minutes

MISSING_CODE = 32766
TRACE_CODE = 32700
ESTIMATED_OFFSET = 100000
QC_MISSING = 8
FLUXNET_FILL = -9999

#: Columns of the raw EVP text, in file order.
RAW_ORDER = ("station_id", "lat_dm", "lon_dm", "elevation_raw", "year", "month", "day",
             "pan_small", "pan_large", "qc_small", "qc_large")
CMA_COLUMNS = ("station_id", "lat", "lon", "elevation_m", "elevation_estimated", "date",
               "pan_small_mm", "pan_large_mm", "qc_small", "qc_large")

#: The FULLSET DD columns written, in the provider's order (a subset of the 324 real ones).
FLUXNET_HEADER = ("TIMESTAMP", "TA_F_MDS", "TA_F_MDS_QC", "TA_F", "TA_F_QC", "SW_IN_POT", "SW_IN_F", "SW_IN_F_QC",
                  "VPD_F", "VPD_F_QC", "PA_F", "PA_F_QC", "P_F", "P_F_QC", "WS_F", "WS_F_QC", "USTAR", "USTAR_QC",
                  "NETRAD", "NETRAD_QC", "G_F_MDS", "G_F_MDS_QC", "LE_F_MDS", "LE_F_MDS_QC", "LE_CORR",
                  "H_F_MDS", "H_F_MDS_QC", "H_CORR", "NEE_VUT_REF", "NEE_VUT_REF_QC", "GPP_NT_VUT_REF")


def cma_evp_file_name(year: int, month: int) -> str:
    """The CMA name of one month's EVP file, e.g. SURF_CLI_CHN_MUL_DAY-EVP-13240-201905.TXT."""
    return f"SURF_CLI_CHN_MUL_DAY-EVP-13240-{year:04d}{month:02d}.TXT"


def fluxnet_daily_file_name(site: str, first_year: int, last_year: int, version: str = "1-4") -> str:
    """The FLUXNET2015 name of a site's daily FULLSET file, e.g. FLX_CN-HaM_FLUXNET2015_FULLSET_DD_2002-2004_1-4.csv."""
    return f"FLX_{site}_FLUXNET2015_FULLSET_DD_{first_year:04d}-{last_year:04d}_{version}.csv"


def _require(table: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what}: table lacks column(s) {missing}; has {list(table.columns)}")


def _write_text(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(text, encoding="utf-8", newline="")
    part.replace(path)
    return path


def encode_pan(mm: np.ndarray, special: np.ndarray | None = None) -> np.ndarray:
    """Pan evaporation [mm] -> raw CMA integers [0.1 mm]: NaN -> 32766, 0 < v < 0.05 mm -> 32700 (trace).

    ``special`` (raw codes >= 30000, 0 for none) replaces the value where set.
    """
    v = np.asarray(mm, dtype=np.float64)
    tenths = np.rint(np.nan_to_num(v, nan=0.0) * 10).astype(np.int64)
    codes = np.where(np.isnan(v), MISSING_CODE, np.where((v > 0) & (tenths == 0), TRACE_CODE, tenths))
    if special is not None:
        special = np.asarray(special, dtype=np.int64)
        codes = np.where(special > 0, special, codes)
    return codes


def cma_raw_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The table (``CMA_COLUMNS``, decimal degrees, m, mm) as the raw EVP integers, in file order.

    Optional ``special_small``/``special_large`` columns (raw codes >= 30000, 0 for none) let the
    synthetic world emit the codes CMA uses besides missing and trace.
    """
    _require(table, CMA_COLUMNS, "CMA EVP writer")
    dates = pd.DatetimeIndex(pd.to_datetime(table["date"]))
    raw = {"station_id": table["station_id"].astype(str).to_numpy(dtype=object),
           "lat_dm": degrees_to_degree_minutes(table["lat"].to_numpy(dtype=np.float64)),
           "lon_dm": degrees_to_degree_minutes(table["lon"].to_numpy(dtype=np.float64)),
           "elevation_raw": (np.rint(table["elevation_m"].to_numpy(dtype=np.float64) * 10).astype(np.int64)
                             + np.where(table["elevation_estimated"].to_numpy(dtype=bool), ESTIMATED_OFFSET, 0)),
           "year": dates.year.to_numpy(), "month": dates.month.to_numpy(), "day": dates.day.to_numpy()}
    for pan in ("small", "large"):
        special = (table[f"special_{pan}"].fillna(0).to_numpy(dtype=np.int64) if f"special_{pan}" in table.columns
                   else np.zeros(len(table), dtype=np.int64))
        mm = table[f"pan_{pan}_mm"].to_numpy(dtype=np.float64)
        raw[f"pan_{pan}"] = encode_pan(mm, special)
        missing = np.isnan(mm) & (special <= 0)
        raw[f"qc_{pan}"] = np.where(missing, QC_MISSING, table[f"qc_{pan}"].to_numpy(dtype=np.int64))
    out = pd.DataFrame(raw)[list(RAW_ORDER)]
    return out.sort_values(["station_id", "year", "month", "day"], kind="stable").reset_index(drop=True)


def write_cma_evp_month(path: Path, table: pd.DataFrame) -> Path:
    """One month of station-days as a SURF_CLI_CHN_MUL_DAY V3.0 EVP text file.

    ``table`` columns: station_id, lat, lon [degrees], elevation_m [m], elevation_estimated (bool),
    date, pan_small_mm, pan_large_mm [mm, NaN = missing], qc_small, qc_large (ints); rows sorted by
    station and day as CMA delivers them.
    """
    raw = cma_raw_columns(table)
    months = set(zip(raw["year"], raw["month"]))
    if len(months) > 1:
        raise ValueError(f"CMA EVP files hold one month; the table spans {sorted(months)}")
    lines = [f"{s:>5} {la:>5} {lo:>6} {el:>6} {y:>4} {m:>2} {d:>2} {ps:>5} {pl:>5} {qs} {ql}"
             for s, la, lo, el, y, m, d, ps, pl, qs, ql in raw.itertuples(index=False, name=None)]
    return _write_text(path, "\n".join(lines) + "\n" if lines else "")


def write_station_table(path: Path, table: pd.DataFrame) -> Path:
    """A plain station table ``station_id,date,et_mm`` plus lat, lon, elevation_m when the table has them.

    Dates as YYYY-MM-DD, missing values blank.
    """
    _require(table, ("station_id", "date", "et_mm"), "station table writer")
    columns = ["station_id", "date", "et_mm"] + [c for c in ("lat", "lon", "elevation_m") if c in table.columns]
    out = table[columns].copy()
    out["station_id"] = out["station_id"].astype(str)
    out["date"] = pd.DatetimeIndex(pd.to_datetime(out["date"])).strftime("%Y-%m-%d")
    return _write_text(path, out.to_csv(index=False, na_rep="", lineterminator="\n"))


def write_fluxnet_daily(path: Path, table: pd.DataFrame) -> Path:
    """A FLUXNET2015 FULLSET daily CSV: ``date`` plus FLUXNET-named columns (at least ``LE_F_MDS`` [W m-2]).

    Other columns of ``FLUXNET_HEADER`` absent from the table (and every NaN) are written as -9999,
    as FLUXNET does; name the file with ``fluxnet_daily_file_name`` so the reader finds the site.
    """
    _require(table, ("date", "LE_F_MDS"), "FLUXNET writer")
    n = len(table)
    out = pd.DataFrame({"TIMESTAMP": pd.DatetimeIndex(pd.to_datetime(table["date"])).strftime("%Y%m%d")})
    for name in FLUXNET_HEADER[1:]:
        values = table[name].to_numpy(dtype=np.float64) if name in table.columns else np.full(n, np.nan)
        out[name] = np.where(np.isnan(values), float(FLUXNET_FILL), values)
    text = out.to_csv(index=False, float_format="%.6g", lineterminator="\n")
    return _write_text(path, text)
