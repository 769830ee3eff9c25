"""CMA SURF_CLI_CHN_MUL_DAY V3.0 daily pan evaporation -> station actual ET.

Two layouts, told apart by content (never by file name):

* the raw monthly text ``SURF_CLI_CHN_MUL_DAY-EVP-13240-YYYYMM.TXT``: 11 whitespace-separated
  integers per line (``RAW_COLUMNS``);
* the tidied CSV published by tidymet (``site,date,long,lat,alt,ET_sml,ET_big,QC_ET_sml,QC_ET_big,...``),
  the same raw integer units with missing values already blank.

Decoding (docs/data-formats.md): coordinates are degrees*100+minutes; elevation is 0.1 m with 100000 added
when estimated; pans are 0.1 mm.  Pan values of 30000 and more are codes, never numbers: 32766
missing, 32700 trace (0 mm), any other is kept in ``special_code`` and its value is missing.  QC
codes (0 correct, 8 missing, others suspect/corrected) outside ``settings.cma.accepted_qc`` drop
their value.

Pan evaporation measures atmospheric demand, not actual ET: ``et = coefficient * pan``, the large
E601B pan preferred and the small 20 cm pan used only where the large one is missing, with
coefficients from the settings or, per station and month, from ``settings.cma.coefficient_file``.

The CMA day runs from 20:00 to 20:00 Beijing time (12:00 UTC of the previous day to 12:00 UTC);
rows are labelled with their date at 00:00 and the dataset says so in ``day_definition``.
"""

from __future__ import annotations

import io
import logging
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
from etfuse.stations_meta import degree_minutes_to_degrees
from etfuse.settings import Settings

log = logging.getLogger(__name__)

DAY_DEFINITION = "CMA day: 20:00 to 20:00 Beijing time (12:00 UTC of the previous day to 12:00 UTC)"

#: Columns of the raw EVP text, in file order.
RAW_COLUMNS = ("station_id", "lat_dm", "lon_dm", "elevation_raw", "year", "month", "day",
               "pan_small", "pan_large", "qc_small", "qc_large")
RAW_EXPECTED = ("11 whitespace-separated integers: station id, latitude (degrees*100+minutes), longitude "
                "(same), elevation (0.1 m, +100000 if estimated), year, month, day, small-pan evaporation "
                "(0.1 mm), large-pan evaporation (0.1 mm), QC small, QC large")

#: Tidied CSV (tidymet) column -> canonical raw column.
TIDIED_NAMES = {"site": "station_id", "date": "date", "lat": "lat_dm", "long": "lon_dm", "alt": "elevation_raw",
                "ET_sml": "pan_small", "ET_big": "pan_large", "QC_ET_sml": "qc_small", "QC_ET_big": "qc_large"}

MISSING_CODE = 32766
TRACE_CODE = 32700
SPECIAL_MIN = 30000              # raw values >= this are codes, never numbers
ESTIMATED_OFFSET = 100000        # added to the elevation [0.1 m] when it is estimated
PAN_MM_PER_UNIT = 0.1            # [mm]
ELEVATION_M_PER_UNIT = 0.1       # [m]
PANS = ("large", "small")

EXTRAS: dict[str, dict[str, str]] = {
    "pan_evaporation_large": {},     # attributes from etfuse.cf
    "pan_evaporation_small": {},
    "qc_large": {"units": "1", "long_name": "CMA QC code of the large pan (0 correct, 1 suspect, 2 wrong, "
                                             "4 corrected, 8 missing, 9 not checked)"},
    "qc_small": {"units": "1", "long_name": "CMA QC code of the small pan (0 correct, 1 suspect, 2 wrong, "
                                             "4 corrected, 8 missing, 9 not checked)"},
    "pan_used": {"units": "1", "long_name": "pan behind et: large (E601B), small (20 cm) or empty when et is missing"},
    "elevation_estimated": {"units": "1", "long_name": "station elevation is an estimate (CMA +100000 flag)"},
    "special_code": {"units": "1", "long_name": "raw CMA special code (>= 30000, not 32700 trace or 32766 missing) "
                                                "that replaced a pan value (large pan first), 0 if none"},
}


# --------------------------------------------------------------------------- layouts -> raw frame
def _raw_txt_frame(path: Path, text: str) -> pd.DataFrame:
    """The raw EVP text as the raw frame (integers in CMA units, ``time``, ``line``); a bad line names itself."""
    rows: list[list[str]] = []
    lines: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != len(RAW_COLUMNS):
            raise SourceFormatError(path, f"line {number}: {len(tokens)} columns", expected=RAW_EXPECTED,
                                    found=repr(line[:120]),
                                    hint="other SURF_CLI_CHN_MUL_DAY elements (TEM, PRE, ...) have other columns; "
                                         "only EVP files belong to this reader")
        rows.append(tokens)
        lines.append(number)
    if not rows:
        raise SourceFormatError(path, "no data lines", expected=RAW_EXPECTED, found="an empty file")
    line_numbers = np.asarray(lines)
    tokens = np.array(rows, dtype=str)
    try:                                    # fast path; the slow one only to name the bad line
        table = tokens.astype(np.int64).astype(np.float64)
        ints = {name: table[:, k] for k, name in enumerate(RAW_COLUMNS)}
    except ValueError:
        raw = pd.DataFrame(tokens, columns=list(RAW_COLUMNS), dtype=str)
        ints = {name: numeric_column(raw[name], path, name, line_numbers, integer=True, allow_missing=False,
                                     expected=RAW_EXPECTED)
                for name in RAW_COLUMNS}
    dates = pd.to_datetime(pd.DataFrame({k: ints[k] for k in ("year", "month", "day")}), errors="coerce")
    bad = dates.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SourceFormatError(path, f"line {line_numbers[i]}: no such date", variable="year/month/day",
                                expected="a valid calendar date",
                                found=f"{ints['year'][i]:.0f}-{ints['month'][i]:.0f}-{ints['day'][i]:.0f}")
    return pd.DataFrame({
        "station_id": tokens[:, 0],
        "time": pd.DatetimeIndex(dates).as_unit("ns").to_numpy(),
        **{name: ints[name] for name in RAW_COLUMNS[1:4] + RAW_COLUMNS[7:]},
        "line": line_numbers,
    })


def _tidied_csv_frame(path: Path, text: str) -> pd.DataFrame:
    """The tidymet CSV's evaporation columns as the raw frame (blank = missing)."""
    header = [c.strip() for c in text.split("\n", 1)[0].strip().split(",")]
    missing = [c for c in TIDIED_NAMES if c not in header]
    if missing:
        raise SourceFormatError(path, f"CSV without column(s) {missing}",
                                expected=f"a tidied SURF_CLI_CHN_MUL_DAY CSV with {','.join(TIDIED_NAMES)}",
                                found=header[:12])
    raw = pd.read_csv(io.StringIO(text), usecols=lambda c: c.strip() in TIDIED_NAMES, dtype=str,
                      keep_default_na=False, na_values=[""])
    raw.columns = [TIDIED_NAMES[c.strip()] for c in raw.columns]
    if raw.empty:
        raise SourceFormatError(path, "no data rows", expected="one row per station and day")
    lines = np.arange(len(raw)) + 2
    frame = pd.DataFrame({
        "station_id": raw["station_id"].astype("string").str.strip().to_numpy(dtype=object).astype(str),
        "time": date_column(raw["date"], path, "date", lines),
    })
    for name in ("lat_dm", "lon_dm", "elevation_raw", "pan_small", "pan_large", "qc_small", "qc_large"):
        required = name in ("lat_dm", "lon_dm", "qc_small", "qc_large")
        frame[name] = numeric_column(raw[name], path, name, lines, integer=True, allow_missing=not required,
                                     expected="an integer in raw CMA units" + (" (required)" if required else ""))
    frame["line"] = lines
    return frame


def _layout(text: str) -> str:
    """``tidied`` when the first non-blank line is a CSV header, else ``raw``."""
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    return "tidied" if "," in first else "raw"


# --------------------------------------------------------------------------- decoding
def _coordinates(frame: pd.DataFrame, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Degree-minute latitude and longitude -> decimal degrees; minutes of 60+ name their line."""
    out = []
    for name in ("lat_dm", "lon_dm"):
        v = frame[name].to_numpy(dtype=np.float64)
        bad = np.abs(v) % 100 >= 60
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SourceFormatError(path, f"line {frame['line'].iloc[i]}: not degrees*100+minutes", variable=name,
                                    expected="minutes below 60", found=f"{v[i]:.0f}")
        out.append(degree_minutes_to_degrees(v))
    return out[0], out[1]


def decode_elevation(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw elevation [0.1 m, +100000 if estimated] -> (elevation [m], estimated flag)."""
    estimated = np.nan_to_num(raw, nan=0.0) >= ESTIMATED_OFFSET
    return (raw - np.where(estimated, ESTIMATED_OFFSET, 0)) * ELEVATION_M_PER_UNIT, estimated


def decode_pan(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw pan evaporation [0.1 mm or code] -> (evaporation [mm], NaN missing; special code or 0).

    32700 (trace) is 0 mm; 32766 and every other code >= 30000 are missing, the others reported.
    """
    trace = raw == TRACE_CODE
    coded = raw >= SPECIAL_MIN
    special = coded & ~trace & (raw != MISSING_CODE)
    value = np.where(coded, np.nan, raw * PAN_MM_PER_UNIT)
    value[trace] = 0.0
    return value, np.where(special, raw, 0).astype(np.int32)


def _qc_codes(frame: pd.DataFrame, name: str, path: Path) -> np.ndarray:
    qc = frame[name].to_numpy(dtype=np.float64)
    bad = ~((qc >= 0) & (qc <= 9))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SourceFormatError(path, f"line {frame['line'].iloc[i]}: bad QC code", variable=name,
                                expected="a digit 0-9 (0 correct, 8 missing, others suspect/corrected)",
                                found=f"{qc[i]:g}")
    return qc.astype(np.int8)


def load_coefficients(path: Path) -> pd.DataFrame:
    """Per station and month pan coefficients: CSV ``station_id,month,pan,coefficient`` (pan = large|small)."""
    if not Path(path).is_file():
        raise SourceFormatError(path, "pan coefficient file does not exist",
                                hint="fix or unset cma.coefficient_file in the settings")
    table = pd.read_csv(io.StringIO(read_text(Path(path))), dtype=str, keep_default_na=False, na_values=[""])
    table.columns = [str(c).strip() for c in table.columns]
    need = ["station_id", "month", "pan", "coefficient"]
    if [c for c in need if c not in table.columns]:
        raise SourceFormatError(path, "not a pan coefficient table", expected=f"header {','.join(need)}",
                                found=list(table.columns))
    lines = np.arange(len(table)) + 2
    out = pd.DataFrame({
        "station_id": table["station_id"].astype("string").str.strip().to_numpy(dtype=object).astype(str),
        "month": numeric_column(table["month"], path, "month", lines, integer=True, allow_missing=False),
        "pan": table["pan"].astype("string").str.strip().str.lower().fillna("").to_numpy(dtype=object).astype(str),
        "coefficient": numeric_column(table["coefficient"], path, "coefficient", lines, allow_missing=False),
    })
    for problem, bad, expected in (
            ("bad month", ~out["month"].between(1, 12), "1..12"),
            ("bad pan", ~out["pan"].isin(PANS), "large or small"),
            ("bad coefficient", ~(out["coefficient"] > 0), "a positive number"),
            ("repeated station, month and pan", out.duplicated(["station_id", "month", "pan"]), "each once")):
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise SourceFormatError(path, f"line {lines[i]}: {problem}", expected=expected,
                                    found=", ".join(f"{k}={out[k].iloc[i]}" for k in need))
    out["month"] = out["month"].astype(np.int64)
    return out


def pan_coefficients(station_id: np.ndarray, month: np.ndarray, settings: Settings) -> dict[str, np.ndarray]:
    """The coefficient of each pan for each row: the settings' default, overridden per station and month."""
    cma = settings.cma
    out = {"large": np.full(len(station_id), cma.pan_coefficient_large, dtype=np.float64),
           "small": np.full(len(station_id), cma.pan_coefficient_small, dtype=np.float64)}
    if cma.coefficient_file is None:
        return out
    table = load_coefficients(Path(cma.coefficient_file))
    rows = pd.MultiIndex.from_arrays([np.asarray(station_id, dtype=object), np.asarray(month, dtype=np.int64)])
    for pan in PANS:
        lut = table[table["pan"] == pan].set_index(["station_id", "month"])["coefficient"]
        override = lut.reindex(rows).to_numpy(dtype=np.float64)
        out[pan] = np.where(np.isnan(override), out[pan], override)
    return out


def decode(frame: pd.DataFrame, path: Path, settings: Settings) -> pd.DataFrame:
    """Raw-unit frame (either layout) -> the per-file point frame with ET and the CMA extras."""
    lat, lon = _coordinates(frame, path)
    elevation, estimated = decode_elevation(frame["elevation_raw"].to_numpy(dtype=np.float64))
    accepted = np.asarray(settings.cma.accepted_qc)
    pans, codes, qcs = {}, {}, {}
    for pan in PANS:
        value, codes[pan] = decode_pan(frame[f"pan_{pan}"].to_numpy(dtype=np.float64))
        qcs[pan] = _qc_codes(frame, f"qc_{pan}", path)
        value[~np.isin(qcs[pan], accepted)] = np.nan
        pans[pan] = value
    n_special = int((codes["large"] != 0).sum() + (codes["small"] != 0).sum())
    if n_special:
        found = pd.Series(np.concatenate([codes["large"], codes["small"]])).loc[lambda s: s != 0].value_counts()
        log.warning("%s: %d pan values were special codes (treated as missing): %s",
                    path, n_special, ", ".join(f"{c}x{n}" for c, n in found.items()))
    station_id = frame["station_id"].to_numpy()
    coef = pan_coefficients(station_id, pd.DatetimeIndex(frame["time"]).month.to_numpy(), settings)
    use_large = ~np.isnan(pans["large"])
    use_small = ~use_large & ~np.isnan(pans["small"])
    et = np.where(use_large, coef["large"] * pans["large"],
                  np.where(use_small, coef["small"] * pans["small"], np.nan))
    return pd.DataFrame({
        "station_id": station_id,
        "time": frame["time"].to_numpy(),
        "lat": lat,
        "lon": lon,
        "elevation_m": elevation,
        "et": et.astype(np.float32),
        "pan_evaporation_large": pans["large"].astype(np.float32),
        "pan_evaporation_small": pans["small"].astype(np.float32),
        "qc_large": qcs["large"],
        "qc_small": qcs["small"],
        "pan_used": np.where(use_large, "large", np.where(use_small, "small", "")),
        "elevation_estimated": estimated,
        "special_code": np.where(codes["large"] != 0, codes["large"], codes["small"]).astype(np.int32),
    })


def read_cma_file(path: Path, settings: Settings) -> pd.DataFrame:
    """One CMA file (either layout) -> the decoded per-file point frame."""
    text = read_text(path)
    frame = _tidied_csv_frame(path, text) if _layout(text) == "tidied" else _raw_txt_frame(path, text)
    return decode(frame, path, settings)


def _coefficient_note(settings: Settings) -> str:
    cma = settings.cma
    note = f"default coefficients: large {cma.pan_coefficient_large:g}, small {cma.pan_coefficient_small:g}"
    if cma.coefficient_file is not None:
        note += f"; per station and month from {Path(cma.coefficient_file).name}"
    return note + f"; accepted QC codes {list(cma.accepted_qc)}"


@register("cma", "stations", "CMA SURF_CLI_CHN_MUL_DAY V3.0 EVP pan evaporation (raw TXT or tidied CSV) -> et via pan coefficients")
def read_cma(paths: Sequence[Path], *, settings: Settings, bbox=None) -> xr.Dataset:
    """Station-day actual ET [kg m-2] from CMA pan evaporation files, as a CF point dataset."""
    box = region_bbox(settings, bbox)
    raw = [read_cma_file(p, settings) for p in paths]
    parts = [clip_to_box(frame, box, p).assign(_file=str(p)) for frame, p in zip(raw, paths)]
    ds = point_dataset(pd.concat(parts, ignore_index=True), source="cma", paths=paths, extras=EXTRAS,
                       known_stations_outside_region=known_outside(raw, box),
                       day_definition=DAY_DEFINITION, pan_coefficients=_coefficient_note(settings),
                       title="CMA station evapotranspiration from pan evaporation, harmonised by etfuse")
    ds["time"].attrs["long_name"] = "CMA observation day (20:00 to 20:00 Beijing time), labelled at 00:00 of its date"
    ds["et"].attrs["comment"] = ("et = pan coefficient * pan evaporation; large E601B pan preferred, small 20 cm pan "
                                 "where the large is missing (see pan_used and the pan_coefficients attribute)")
    return ds
