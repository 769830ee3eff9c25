"""Plain station tables of measured actual ET, and the point-dataset contract of every station reader.

Sites that measure actual ET (eddy covariance, lysimeters) are delivered as a CSV
``station_id,date,et_mm`` with optional ``lat,lon,elevation_m`` (docs/data-formats.md).  A station without
coordinates in the table takes them from the project's facts tables (CMA Qinghai stations,
FLUXNET sites); one known to neither is an error, never a silent drop.

Every station reader (``cma``, ``stations``, ``fluxnet``) returns the same long form, built here by
``point_dataset``: one row per station-day along dimension ``obs`` with ``station_id``, ``time``
(the day at 00:00), ``lat``, ``lon`` [degrees] as coordinates, and ``elevation_m`` [m] and ``et``
[kg m-2] as data variables.  Missing station-days stay as rows with NaN so completeness can be
checked later.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.cf import annotate
from etfuse.errors import NoOverlapError, SourceFormatError
from etfuse.settings import Settings
from etfuse.sources import register
from etfuse.sources.common import region_bbox
from etfuse.stations_meta import known_locations

log = logging.getLogger(__name__)

#: Columns every station reader's per-file frame carries before ``point_dataset``.
POINT_COLUMNS = ("station_id", "time", "lat", "lon", "elevation_m", "et")

#: Attributes of the point coordinates and of elevation (``et`` gets its attributes from etfuse.cf).
POINT_ATTRS: dict[str, dict[str, str]] = {
    "station_id": {"long_name": "station identifier (CMA 5-digit id or FLUXNET site id)"},
    "time": {"standard_name": "time", "long_name": "observation day, labelled at 00:00 of its date"},
    "lat": {"standard_name": "latitude", "units": "degrees_north", "long_name": "station latitude"},
    "lon": {"standard_name": "longitude", "units": "degrees_east", "long_name": "station longitude"},
    "elevation_m": {"standard_name": "height_above_mean_sea_level", "units": "m",
                    "long_name": "station elevation (NaN if unknown)"},
}

TABLE_REQUIRED = ("station_id", "date", "et_mm")
TABLE_OPTIONAL = ("lat", "lon", "elevation_m")
_FACTS_HINT = ("add lat,lon (and elevation_m) columns to the table, or add the station to "
               "etfuse/data/cma_stations_qinghai.csv or etfuse/data/fluxnet_sites.csv")


# --------------------------------------------------------------------------- shared parsing helpers
def read_text(path: Path) -> str:
    """The file as text (UTF-8, optional BOM); binary or wrongly encoded files are format errors."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceFormatError(path, "not a UTF-8/ASCII text file", expected="a text table",
                                found=f"undecodable byte at offset {exc.start}") from exc


def numeric_column(values: pd.Series, path: Path, column: str, lines: np.ndarray, *,
                   integer: bool = False, allow_missing: bool = True, expected: str | None = None) -> np.ndarray:
    """Strings -> float64 with NaN for blanks; a non-number names its line and column.

    ``lines`` holds the file line number of each row.  ``integer`` also rejects fractions (raw CMA
    units are integers; a fraction means the values were already converted, and units are never
    guessed).
    """
    text = values.astype("string").str.strip()
    blank = text.isna() | (text == "")
    parsed = pd.to_numeric(text.where(~blank, None), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~blank.to_numpy() & ~np.isfinite(parsed)
    if integer:
        bad |= np.isfinite(parsed) & (parsed != np.round(parsed))
    if not allow_missing:
        bad |= blank.to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        shown = "" if blank.iloc[i] else str(text.iloc[i])
        raise SourceFormatError(path, f"line {int(lines[i])}: bad value in column {column!r}", variable=column,
                                expected=expected or ("an integer" if integer else "a number"),
                                found=repr(shown) if shown else "a blank", hint=f"{int(bad.sum())} bad value(s) in this column")
    return parsed


def date_column(values: pd.Series, path: Path, column: str, lines: np.ndarray, fmt: str = "%Y-%m-%d") -> np.ndarray:
    """Strings in ``fmt`` -> datetime64[ns] days; an unparsable date names its line."""
    text = values.astype("string").str.strip()
    parsed = pd.to_datetime(text, format=fmt, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SourceFormatError(path, f"line {int(lines[i])}: bad date", variable=column,
                                expected=f"a date as {fmt.replace('%Y', 'YYYY').replace('%m', 'MM').replace('%d', 'DD')}",
                                found=repr(text.iloc[i]) if not pd.isna(text.iloc[i]) else "a blank")
    return pd.DatetimeIndex(parsed).as_unit("ns").to_numpy()


def clip_to_box(frame: pd.DataFrame, box: tuple[float, float, float, float], path: Path) -> pd.DataFrame:
    """Keep rows whose station lies inside ``box`` (west, south, east, north) [degrees]; none left is an error."""
    west, south, east, north = box
    lat = frame["lat"].to_numpy(dtype=np.float64)
    lon = frame["lon"].to_numpy(dtype=np.float64)
    inside = (lon >= west) & (lon <= east) & (lat >= south) & (lat <= north)
    if not inside.any():
        n = frame["station_id"].nunique()
        found = (f"{n} station(s) at lon {np.nanmin(lon):g}..{np.nanmax(lon):g}, lat {np.nanmin(lat):g}..{np.nanmax(lat):g}"
                 if len(frame) else "no rows")
        raise NoOverlapError(path, "no station of the file lies inside the region",
                             expected=f"stations inside lon {west:g}..{east:g}, lat {south:g}..{north:g}", found=found,
                             hint="check the region settings, or pass --bbox to harmonise another area")
    if not inside.all():
        log.debug("%s: dropped %d of %d stations outside the region", path,
                  frame.loc[~inside, "station_id"].nunique(), frame["station_id"].nunique())
    return frame.loc[inside]


def known_outside(frames: Sequence[pd.DataFrame], box: tuple[float, float, float, float]) -> str:
    """Ids of stations the project knows (facts tables) that a file places outside ``box``.

    A national file legitimately holds hundreds of stations outside Qinghai, which are dropped;
    a Qinghai station among them means its coordinates are wrong, which validation reports.
    """
    from etfuse.stations_meta import known_locations
    west, south, east, north = box
    known = set(known_locations().index.astype(str))
    ids: set[str] = set()
    for frame in frames:
        lat = frame["lat"].to_numpy(dtype=np.float64)
        lon = frame["lon"].to_numpy(dtype=np.float64)
        outside = ~((lon >= west) & (lon <= east) & (lat >= south) & (lat <= north))
        ids |= set(frame.loc[outside, "station_id"].astype(str)) & known
    return ",".join(sorted(ids))


def _drop_repeats(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (station_id, time): identical repeats collapse, conflicting ones are an error."""
    key = ["station_id", "time"]
    repeated = frame.duplicated(key, keep=False)
    if not repeated.any():
        return frame
    sub = frame.loc[repeated]
    same = sub.drop(columns="_file").duplicated(keep=False)
    if not same.all():
        first = sub.loc[~same].iloc[0]
        rows = sub[(sub["station_id"] == first["station_id"]) & (sub["time"] == first["time"])]
        files = sorted(set(rows["_file"]))
        day = pd.Timestamp(first["time"]).strftime("%Y-%m-%d")
        raise SourceFormatError(files[0], f"station {first['station_id']} day {day} appears {len(rows)} times "
                                "with different values", expected="one row per station and day",
                                found=f"rows in {', '.join(files)}",
                                hint="remove the repeated rows, or ingest a revised file on its own")
    log.info("dropped %d identical repeated station-day rows", int(frame.duplicated(key).sum()))
    return frame.drop_duplicates(key, keep="first")


def _column_values(series: pd.Series) -> np.ndarray:
    """pandas (Arrow-backed strings included) -> a numpy array xarray writes cleanly."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=bool)
    if pd.api.types.is_string_dtype(series.dtype) or series.dtype == object:
        return series.to_numpy(dtype=object).astype(str)
    return series.to_numpy()


def point_dataset(frame: pd.DataFrame, *, source: str, paths: Sequence[Path],
                  extras: Mapping[str, Mapping[str, str]] | None = None, **global_attrs: str) -> xr.Dataset:
    """The long-form CF ``point`` dataset of the station readers from their concatenated frames.

    ``frame`` holds ``POINT_COLUMNS``, the columns named in ``extras`` (with their attributes) and
    ``_file`` (the source path of each row, for error messages).  Rows are sorted by
    (station_id, time) and each station-day appears once.
    """
    extras = dict(extras or {})
    frame = _drop_repeats(frame)
    frame = frame.sort_values(["station_id", "time"], kind="stable").reset_index(drop=True)
    coords = {
        "station_id": ("obs", frame["station_id"].to_numpy(dtype=object).astype(str)),
        "time": ("obs", pd.DatetimeIndex(frame["time"]).as_unit("ns").to_numpy()),
        "lat": ("obs", frame["lat"].to_numpy(dtype=np.float64)),
        "lon": ("obs", frame["lon"].to_numpy(dtype=np.float64)),
    }
    data_vars = {
        "elevation_m": ("obs", frame["elevation_m"].to_numpy(dtype=np.float64)),
        "et": ("obs", frame["et"].to_numpy(dtype=np.float32)),
    }
    for name in extras:
        data_vars[name] = ("obs", _column_values(frame[name]))
    ds = xr.Dataset(data_vars, coords=coords)
    ds = annotate(ds, featureType="point", source=source, source_files=" ".join(p.name for p in paths),
                  **global_attrs)
    for name, attrs in POINT_ATTRS.items():
        ds[name].attrs.update(attrs)
    for name, attrs in extras.items():
        ds[name].attrs.update(attrs)
    return ds


# --------------------------------------------------------------------------- the station table reader
def _check_field_counts(text: str, path: Path) -> None:
    """Every row has as many fields as the header: a row cut short (a truncated delivery) would
    otherwise be read with its missing fields as blanks and a truncated last number."""
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if not rows:
        return
    width = len(rows[0])
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != width:
            raise SourceFormatError(path, f"line {number}: {len(row)} field(s), the header has {width}",
                                    expected="every row as wide as the header (a cut or malformed row)",
                                    found=",".join(row)[:80])


def _table_frame(path: Path) -> pd.DataFrame:
    """One station table -> the per-file point frame, coordinates filled from the facts tables."""
    text = read_text(path)
    _check_field_counts(text, path)
    raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in TABLE_REQUIRED if c not in raw.columns]
    if missing:
        raise SourceFormatError(path, f"missing column(s) {missing}", expected=f"header {','.join(TABLE_REQUIRED)} "
                                f"with optional {','.join(TABLE_OPTIONAL)}", found=list(raw.columns))
    if raw.empty:
        raise SourceFormatError(path, "the table has no rows", expected="one row per station and day")
    lines = np.arange(len(raw)) + 2                                  # header is line 1
    ids = raw["station_id"].astype("string").str.strip().fillna("")
    if (ids == "").any():
        i = int(np.flatnonzero((ids == "").to_numpy())[0])
        raise SourceFormatError(path, f"line {lines[i]}: blank station_id", variable="station_id",
                                expected="a station id on every row")
    frame = pd.DataFrame({
        "station_id": ids.to_numpy(dtype=object).astype(str),
        "time": date_column(raw["date"], path, "date", lines),
        "et": numeric_column(raw["et_mm"], path, "et_mm", lines),
    })
    for name in TABLE_OPTIONAL:
        frame[name] = (numeric_column(raw[name], path, name, lines) if name in raw.columns
                       else np.full(len(raw), np.nan))
    return _fill_locations(frame, path)


def _fill_locations(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Rows without both lat and lon take the station's facts-table location; elevation gaps too."""
    facts = known_locations()
    need = frame["lat"].isna() | frame["lon"].isna()
    unknown = sorted(set(frame.loc[need, "station_id"]) - set(facts.index))
    if unknown:
        raise SourceFormatError(path, f"no coordinates for station(s) {', '.join(unknown[:10])}"
                                + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""),
                                variable="station_id", expected="lat,lon in the table or a station known to the facts tables",
                                found="neither", hint=_FACTS_HINT)
    known = facts.reindex(frame["station_id"].to_numpy())
    for name in ("lat", "lon"):
        frame[name] = np.where(need, known[name].to_numpy(dtype=np.float64), frame[name].to_numpy())
    frame["elevation_m"] = frame["elevation_m"].fillna(pd.Series(known["elevation_m"].to_numpy(dtype=np.float64),
                                                                 index=frame.index))
    return frame


@register("stations", "stations", "station table station_id,date,et_mm[,lat,lon,elevation_m] of measured actual ET")
def read_station_table(paths: Sequence[Path], *, settings: Settings, bbox=None) -> xr.Dataset:
    """Measured daily actual ET [mm] from plain station tables, as a CF point dataset."""
    box = region_bbox(settings, bbox)
    raw = [_table_frame(path) for path in paths]
    parts = [clip_to_box(frame, box, path).assign(_file=str(path)) for frame, path in zip(raw, paths)]
    return point_dataset(pd.concat(parts, ignore_index=True), source="stations", paths=paths,
                         known_stations_outside_region=known_outside(raw, box),
                         title="Station measurements of daily actual evapotranspiration harmonised by etfuse")
