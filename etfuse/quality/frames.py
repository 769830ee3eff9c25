"""Reader datasets -> the pandas DataFrames the Great Expectations suites validate.

Great Expectations validates tables, so every batch becomes a few frames, each built with numpy
(no Python loop over cells or rows):

* ``meta``: one row per data variable and per coordinate (index ``variable``): ``name``, ``kind``,
  ``dims``, ``units``, ``dtype``, ``order`` (``ascending``/``descending`` for 1-D numeric
  coordinates) and what the suites expect of it (``expected_units``/``expected_dims``/
  ``expected_order``).  The schema checks run here, so a missing variable or a wrong units
  attribute is one readable row.
* gridded sources
  - ``cells``: one row per cell per day over the *region* (source cells whose centres fall inside
    the region, not the margin): ``time``, ``month``, ``lat``, ``lon`` and one float64 column per
    variable.  Physical ranges, region coverage and drift run here.
  - ``days``: one row per day (index ``day`` = ISO date, so GE's unexpected-index lists name days):
    ``time``, ``month``, ``gap_days``, ``seconds_after_midnight``, per variable
    ``<var>_missing_share`` / ``<var>_valid_cells`` / ``<var>_mean`` / ``<var>_max`` /
    ``<var>_absmax`` over the region, ``valid_cells``, ``incomplete_variables``, the reader's
    per-day coordinates (``has_<var>``, ``era5_stream``) and the consistency columns.
    Completeness, dates and units-look-wrong run here.
* station sources
  - ``obs``: the long-form rows (index ``row`` = ``"<station_id> <YYYY-MM-DD>"``) with the derived
    ``month``, ``seconds_after_midnight``, ``inside_region`` (0/1), ``station_id_in_region``
    (None in the margin, so GE ignores those rows) and ``distance_to_known_deg``;
  - ``stations``: one row per station inside the region (index ``station_id``): ``rows``,
    ``days_present_share``, ``et_missing_share``.

Derived columns replace GE row conditions where they would be evaluated often: a row condition is
a ``DataFrame.query`` per metric, several per expectation.

Float columns are float64 on purpose: GE 1.x vectorises ``column_values.between`` only for int64
and float64 columns and falls back to a per-value Python map for float32 (about 5x slower on a
full-province MODIS day).

ERA5-Land variables flagged incomplete on a day (``has_<var>`` False) are NaN for that day by
construction; their ``<var>_missing_share`` is NaN (GE ignores it) so they never count as missing.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.cf import COORDINATES, VARIABLES
from etfuse.errors import UnknownNameError
from etfuse.settings import Settings
from etfuse.stations_meta import known_locations

log = logging.getLogger(__name__)

Kind = Literal["grid", "stations"]


@dataclass(frozen=True)
class SourceSpec:
    """What the suites expect of one source's reader output."""

    name: str
    kind: Kind
    #: variables every batch must hold (schema, critical)
    required: tuple[str, ...]
    #: variables checked when present
    optional: tuple[str, ...] = ()

    @property
    def variables(self) -> tuple[str, ...]:
        return self.required + self.optional


SOURCES: dict[str, SourceSpec] = {
    # ERA5-Land requests are often split (accumulated and instantaneous fields in separate files, or
    # the next month's first step alone): a batch holds any of these; the reader refuses one with none.
    "era5land": SourceSpec("era5land", "grid", (), ("et", "net_radiation", "skt", "t2m", "precipitation")),
    "gleam": SourceSpec("gleam", "grid", ("et",)),
    "modis": SourceSpec("modis", "grid", ("lst",)),
    "cma": SourceSpec("cma", "stations", ("et", "elevation_m", "pan_evaporation_large", "pan_evaporation_small",
                                          "qc_large", "qc_small", "special_code")),
    "stations": SourceSpec("stations", "stations", ("et", "elevation_m")),
    "fluxnet": SourceSpec("fluxnet", "stations", ("et", "elevation_m", "latent_heat_flux"), ("qc_fraction",)),
}

#: units attribute every variable and coordinate must carry after its reader (etfuse.cf + extras)
UNITS: dict[str, str] = {
    **{name: attrs["units"] for name, attrs in VARIABLES.items() if "units" in attrs},
    **{name: attrs["units"] for name, attrs in COORDINATES.items() if "units" in attrs},
    "elevation_m": "m", "latent_heat_flux": "W m-2", "qc_fraction": "1",
    "qc_large": "1", "qc_small": "1", "special_code": "1",
}


def source_spec(source: str) -> SourceSpec:
    if source not in SOURCES:
        raise UnknownNameError(f"no validation suite for source {source!r}; expected one of {sorted(SOURCES)}")
    return SOURCES[source]


# --------------------------------------------------------------------------- the region
def region_index(axis: np.ndarray, low: float, high: float) -> np.ndarray:
    """Positions of cell centres inside [low, high] [degrees] (a hair of tolerance for rounding)."""
    axis = np.asarray(axis, dtype=np.float64)
    eps = 1e-9 * max(1.0, abs(low), abs(high))
    return np.flatnonzero((axis >= low - eps) & (axis <= high + eps))


def region_cells(ds: xr.Dataset, region) -> tuple[np.ndarray, np.ndarray]:
    """Row and column positions of ``ds``'s cells whose centres fall inside ``region`` (not the margin)."""
    if "lat" not in ds.coords or "lon" not in ds.coords:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    return (region_index(ds["lat"].values, region.lat_min, region.lat_max),
            region_index(ds["lon"].values, region.lon_min, region.lon_max))


def region_values(ds: xr.Dataset, variable: str, region) -> np.ndarray | None:
    """``variable`` over the region as float64 ``(time, lat, lon)`` (a missing time axis becomes length 1)."""
    if variable not in ds.data_vars or not {"lat", "lon"} <= set(ds[variable].dims):
        return None
    rows, cols = region_cells(ds, region)
    da = ds[variable].isel(lat=rows, lon=cols)
    if "time" not in da.dims:
        da = da.expand_dims("time")
    other = [d for d in da.dims if d not in ("time", "lat", "lon")]
    if other:
        return None
    return np.asarray(da.transpose("time", "lat", "lon").values, dtype=np.float64)


# --------------------------------------------------------------------------- claimed periods
_CLAIMS: dict[str, tuple[re.Pattern[str], Callable[[re.Match[str]], tuple[date, date]]]] = {
    "gleam": (re.compile(r"^[A-Za-z]+_(\d{4})_GLEAM_"),
              lambda m: (date(int(m[1]), 1, 1), date(int(m[1]), 12, 31))),
    "modis": (re.compile(r"(?:^|[._\-])A(\d{4})(\d{3})(?=$|[._\-])"),
              lambda m: ((pd.Timestamp(int(m[1]), 1, 1) + pd.Timedelta(days=int(m[2]) - 1)).date(),) * 2),
    "cma": (re.compile(r"-(\d{4})(\d{2})\.TXT$", re.IGNORECASE),
            lambda m: (date(int(m[1]), int(m[2]), 1),
                       (pd.Timestamp(int(m[1]), int(m[2]), 1) + pd.offsets.MonthEnd(0)).date())),
    "fluxnet": (re.compile(r"_(\d{4})-(\d{4})_[\d-]+\.csv$", re.IGNORECASE),
                lambda m: (date(int(m[1]), 1, 1), date(int(m[2]), 12, 31))),
}


def claimed_period(source: str, names: Sequence[str]) -> tuple[date, date] | None:
    """The days the provider's file names claim (GLEAM year, MODIS day, CMA month, FLUXNET years).

    None when no name follows its provider's pattern (ERA5-Land names are chosen by whoever made
    the CDS request, so they claim nothing).
    """
    if source not in _CLAIMS:
        return None
    pattern, period = _CLAIMS[source]
    spans = []
    for name in names:
        m = pattern.search(Path(name).name)
        if m:
            try:
                spans.append(period(m))
            except ValueError:          # e.g. month 13: the name claims nothing sensible
                continue
    if not spans:
        return None
    return min(s for s, _ in spans), max(e for _, e in spans)


def file_names(ds: xr.Dataset, file: Path | None) -> list[str]:
    if file is not None:
        return [Path(file).name]
    return str(ds.attrs.get("source_files", "")).split()


# --------------------------------------------------------------------------- frames
@dataclass
class Frames:
    """Everything one validation runs on; ``tables`` maps frame name -> DataFrame."""

    source: str
    kind: Kind
    tables: dict[str, pd.DataFrame]
    days: list[date]
    #: source cell size [degrees] along lat and lon (grids), for the coverage tolerance
    cell_deg: tuple[float, float] = (0.0, 0.0)
    #: region cells per day (grids)
    region_cell_count: int = 0
    claimed: tuple[date, date] | None = None
    #: variables present among the source's expected ones
    variables: tuple[str, ...] = ()
    #: consistency columns added to ``days``: column -> (variable, other source, other variable)
    consistency: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    months: tuple[int, ...] = ()

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]


def meta_frame(ds: xr.Dataset, source: str) -> pd.DataFrame:
    """One row per data variable and coordinate (index ``name``), with what the suites expect of it.

    Columns: ``kind``, ``dims``, ``units``, ``dtype``, ``order`` (``ascending``/``descending``/
    ``unordered`` for 1-D numeric coordinates) and ``expected_units``/``expected_dims``/
    ``expected_order`` (None where nothing is expected), so each schema check is one pairwise
    comparison over all variables instead of one filtered check per variable.
    """
    spec = source_spec(source)
    grid = spec.kind == "grid"
    rows = []
    for kind, names in (("variable", list(ds.data_vars)), ("coordinate", list(ds.coords))):
        for name in map(str, names):
            da = ds[name]
            order = ""
            if da.ndim == 1 and da.size > 1 and np.issubdtype(da.dtype, np.number):
                steps = np.diff(np.asarray(da.values, dtype=np.float64))
                order = "ascending" if (steps > 0).all() else "descending" if (steps < 0).all() else "unordered"
            checked = name in spec.variables or name in ("lat", "lon")
            if name in spec.variables:
                expected_dims = "time,lat,lon" if grid else "obs"
            elif name in ("lat", "lon"):
                expected_dims = name if grid else "obs"
            else:
                expected_dims = None
            rows.append({"name": name, "kind": kind, "dims": ",".join(map(str, da.dims)),
                         "units": str(da.attrs.get("units", "")), "dtype": str(da.dtype), "order": order,
                         "expected_units": UNITS.get(name) if checked else None,
                         "expected_dims": expected_dims,
                         "expected_order": {"lat": "descending", "lon": "ascending"}.get(name) if grid else None})
    columns = ["name", "kind", "dims", "units", "dtype", "order", "expected_units", "expected_dims", "expected_order"]
    frame = pd.DataFrame(rows, columns=columns)
    frame.index = pd.Index(frame["name"].to_numpy(dtype=object), name="variable")
    return frame


def _cell_size(axis: np.ndarray) -> float:
    axis = np.asarray(axis, dtype=np.float64)
    return float(np.median(np.abs(np.diff(axis)))) if axis.size > 1 else 0.0


def _day_index(times: pd.DatetimeIndex) -> pd.Index:
    return pd.Index(times.strftime("%Y-%m-%d"), name="day")


def _seconds_after_midnight(times: pd.DatetimeIndex) -> np.ndarray:
    return ((times - times.floor("D")) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)


def grid_frames(source: str, ds: xr.Dataset, *, settings: Settings, file: Path | None = None,
                other_source_day: Callable[[str, date], xr.Dataset | None] | None = None) -> Frames:
    """``meta``, ``cells`` and ``days`` for a gridded reader's ``(time, lat, lon)`` dataset."""
    spec = source_spec(source)
    region = settings.region
    meta = meta_frame(ds, source)
    times = pd.DatetimeIndex(ds["time"].values) if "time" in ds.coords and ds["time"].ndim == 1 else pd.DatetimeIndex([])
    rows, cols = region_cells(ds, region)
    lat = ds["lat"].values[rows].astype(np.float64) if "lat" in ds.coords else np.array([])
    lon = ds["lon"].values[cols].astype(np.float64) if "lon" in ds.coords else np.array([])
    variables = tuple(v for v in spec.variables if v in ds.data_vars)
    fields = {}
    for v in variables:
        values = region_values(ds, v, region)
        if values is not None and values.shape[0] == len(times):
            fields[v] = values
    per_day = lat.size * lon.size
    n_days = len(times)

    cells = {
        "time": np.repeat(times.as_unit("ns").to_numpy(), per_day),
        "month": np.repeat(times.month.to_numpy(dtype=np.int64), per_day),
        "lat": np.tile(np.repeat(lat, lon.size), n_days),
        "lon": np.tile(lon, lat.size * n_days),
    }
    for v, values in fields.items():
        cells[v] = values.reshape(-1)
    cells_frame = pd.DataFrame(cells)

    days = pd.DataFrame({"time": times.as_unit("ns").to_numpy(), "month": times.month.to_numpy(dtype=np.int64),
                         "seconds_after_midnight": _seconds_after_midnight(times)}, index=_day_index(times))
    order = np.argsort(times.to_numpy(), kind="stable")
    gaps = np.full(n_days, np.nan)
    if n_days > 1:
        gaps[order[1:]] = np.diff(times.to_numpy()[order]) / np.timedelta64(1, "D")
    days["gap_days"] = gaps
    any_valid = np.zeros((n_days, lat.size, lon.size), dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        for v, values in (fields.items() if n_days else ()):
            valid = np.isfinite(values)
            any_valid |= valid
            count = valid.reshape(n_days, -1).sum(axis=1)
            flat = values.reshape(n_days, -1)
            share = 1.0 - count / per_day if per_day else np.full(n_days, np.nan)
            has = f"has_{v}"
            if has in ds.coords and ds[has].dims == ("time",):
                flags = np.asarray(ds[has].values, dtype=bool)
                share = np.where(flags, share, np.nan)          # incomplete by design, not missing
                days[has] = flags
            days[f"{v}_missing_share"] = share
            days[f"{v}_valid_cells"] = count.astype(np.int64)
            finite_any = count > 0
            safe = np.where(np.isfinite(flat), flat, 0.0)
            days[f"{v}_mean"] = np.where(finite_any, safe.sum(axis=1) / np.maximum(count, 1), np.nan)
            largest = np.where(np.isfinite(flat), flat, -np.inf).max(axis=1, initial=-np.inf)
            days[f"{v}_max"] = np.where(finite_any, largest, np.nan)
            days[f"{v}_absmax"] = np.where(finite_any, np.abs(safe).max(axis=1, initial=0.0), np.nan)
    incomplete = np.full(n_days, "", dtype=object)
    for v in fields:
        if f"has_{v}" in days:
            flag = ~days[f"has_{v}"].to_numpy(dtype=bool)
            incomplete = np.where(flag, np.where(incomplete == "", v, incomplete + "," + v), incomplete)
    days["incomplete_variables"] = incomplete
    days["valid_cells"] = any_valid.reshape(n_days, -1).sum(axis=1).astype(np.int64) if n_days else np.array([], np.int64)
    for coord in ds.coords:
        if str(coord).startswith("has_") or coord == "time" or ds[coord].dims != ("time",):
            continue
        days[str(coord)] = np.asarray(ds[coord].values).astype(str)      # e.g. era5_stream
    frames = Frames(source=source, kind="grid", tables={"meta": meta, "cells": cells_frame, "days": days},
                    days=sorted({t.date() for t in times}),
                    cell_deg=(_cell_size(ds["lat"].values) if "lat" in ds.coords else 0.0,
                              _cell_size(ds["lon"].values) if "lon" in ds.coords else 0.0),
                    region_cell_count=per_day, claimed=claimed_period(source, file_names(ds, file)),
                    variables=tuple(fields), months=tuple(sorted(set(times.month.tolist()))))
    if other_source_day is not None:
        add_consistency(frames, other_source_day, settings=settings)
    return frames


#: (this source, variable) -> (other source, its variable, settings key of the bound)
CONSISTENCY_PAIRS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("gleam", "et"): ("era5land", "et", "consistency_et_max_abs_diff"),
    ("era5land", "et"): ("gleam", "et", "consistency_et_max_abs_diff"),
    ("modis", "lst"): ("era5land", "skt", "consistency_lst_skt_max_abs_diff_k"),
    ("era5land", "skt"): ("modis", "lst", "consistency_lst_skt_max_abs_diff_k"),
}


def consistency_column(variable: str, other: str, other_variable: str) -> str:
    return f"{variable}_vs_{other}_{other_variable}_absdiff"


def _other_day_mean(other_ds: xr.Dataset, variable: str, day: date, region) -> float:
    """Region mean of ``variable`` in another source's dataset on ``day`` (NaN when absent)."""
    if variable not in other_ds.data_vars:
        return float("nan")
    if "time" in other_ds[variable].dims:
        times = pd.DatetimeIndex(other_ds["time"].values).normalize()
        pick = np.flatnonzero(times == pd.Timestamp(day))
        if pick.size == 0:
            return float("nan")
        other_ds = other_ds.isel(time=pick[:1])
        flag = f"has_{variable}"
        if flag in other_ds.coords and not bool(np.asarray(other_ds[flag].values).reshape(-1)[0]):
            return float("nan")
    values = region_values(other_ds, variable, region)
    if values is None or not np.isfinite(values).any():
        return float("nan")
    return float(np.nanmean(values))


def add_consistency(frames: Frames, other_source_day: Callable[[str, date], xr.Dataset | None], *,
                    settings: Settings) -> None:
    """Add ``<var>_vs_<other>_<ovar>_absdiff`` and ``<other>_<ovar>_mean`` to ``days`` for each pair.

    Region means (cells whose centres lie in the region), one call of ``other_source_day`` per day
    and other source.
    """
    days = frames["days"]
    for variable in frames.variables:
        pair = CONSISTENCY_PAIRS.get((frames.source, variable))
        if pair is None:
            continue
        other, other_variable, _ = pair
        other_means = np.full(len(days), np.nan)
        for i, when in enumerate(pd.DatetimeIndex(days["time"])):
            try:
                other_ds = other_source_day(other, when.date())
            except Exception as exc:       # a broken stored day must not stop this batch's validation
                log.warning("consistency of %s %s: cannot read %s for %s (%s: %s); not compared that day",
                            frames.source, variable, other, when.date(), type(exc).__name__, exc)
                continue
            if other_ds is not None:
                other_means[i] = _other_day_mean(other_ds, other_variable, when.date(), settings.region)
        column = consistency_column(variable, other, other_variable)
        days[f"{other}_{other_variable}_mean"] = other_means
        days[column] = np.abs(days[f"{variable}_mean"].to_numpy(dtype=np.float64) - other_means)
        frames.consistency[column] = (variable, other, other_variable)


def _strings(values: np.ndarray) -> np.ndarray:
    return np.asarray(values).astype(str).astype(object)


def station_frames(source: str, ds: xr.Dataset, *, settings: Settings, file: Path | None = None) -> Frames:
    """``meta``, ``obs`` and ``stations`` for a station reader's long-form ``obs`` dataset."""
    spec = source_spec(source)
    region = settings.region
    meta = meta_frame(ds, source)
    n = ds.sizes.get("obs", 0)
    columns: dict[str, np.ndarray] = {}
    for name in list(ds.coords) + list(ds.data_vars):
        da = ds[name]
        if da.dims != ("obs",):
            continue
        values = np.asarray(da.values)
        if np.issubdtype(values.dtype, np.floating):
            values = values.astype(np.float64)          # GE vectorises float64/int64 only
        elif np.issubdtype(values.dtype, np.integer):
            values = values.astype(np.int64)
        elif values.dtype.kind in "OUS":
            values = _strings(values)
        columns[str(name)] = values
    obs = pd.DataFrame(columns)
    station_id = obs["station_id"].to_numpy(dtype=object) if "station_id" in obs else np.full(n, "", dtype=object)
    times = pd.DatetimeIndex(obs["time"]) if "time" in obs else pd.DatetimeIndex([pd.NaT] * n)
    lat = obs["lat"].to_numpy(dtype=np.float64) if "lat" in obs else np.full(n, np.nan)
    lon = obs["lon"].to_numpy(dtype=np.float64) if "lon" in obs else np.full(n, np.nan)
    inside = ((lat >= region.lat_min) & (lat <= region.lat_max) & (lon >= region.lon_min) & (lon <= region.lon_max))
    obs["month"] = times.month.to_numpy(dtype=np.int64) if n else np.array([], np.int64)
    obs["seconds_after_midnight"] = _seconds_after_midnight(times) if n else np.array([], np.int64)
    obs["inside_region"] = inside.astype(np.int64)
    obs["station_id_in_region"] = np.where(inside, station_id, None)      # None (ignored) in the margin
    facts = known_locations()
    located = facts.reindex(station_id.astype(str))
    distance = np.hypot(lat - located["lat"].to_numpy(dtype=np.float64), lon - located["lon"].to_numpy(dtype=np.float64))
    obs["distance_to_known_deg"] = distance                      # NaN for stations the facts tables lack
    obs.index = pd.Index(station_id.astype(str) + " " + times.strftime("%Y-%m-%d").to_numpy(dtype=str), name="row") \
        if n else pd.Index([], name="row")

    claimed = claimed_period(source, file_names(ds, file))
    stations = _per_station(obs, times, claimed)
    variables = tuple(v for v in spec.variables if v in obs.columns)
    outside_ids = [i for i in str(ds.attrs.get("known_stations_outside_region", "")).split(",") if i]
    outside = pd.DataFrame({"station_id": pd.Series(outside_ids, dtype=object)})
    return Frames(source=source, kind="stations",
                  tables={"meta": meta, "obs": obs, "stations": stations, "outside": outside},
                  days=sorted({t.date() for t in times.dropna()}), claimed=claimed, variables=variables,
                  months=tuple(sorted(set(times.dropna().month.tolist()))))


def _per_station(obs: pd.DataFrame, times: pd.DatetimeIndex, claimed: tuple[date, date] | None) -> pd.DataFrame:
    """One row per station inside the region: rows, share of the period's days present, share without ET.

    Stations in the margin are left out: only stations inside the region reach the target grid.
    """
    columns = ["rows", "days_present_share", "et_missing_share"]
    if obs.empty or "station_id" not in obs:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="station_id"))
    if claimed is not None:
        n_days = (pd.Timestamp(claimed[1]) - pd.Timestamp(claimed[0])).days + 1
    else:
        valid = times.dropna()
        n_days = (valid.max() - valid.min()).days + 1 if len(valid) else 1
    inside = obs["inside_region"].to_numpy() == 1
    frame = pd.DataFrame({"station_id": obs["station_id"].to_numpy(dtype=object)[inside], "day": times.normalize()[inside],
                          "et_missing": (obs["et"].isna().to_numpy() if "et" in obs else np.ones(len(obs), bool))[inside]})
    grouped = frame.groupby("station_id", sort=True)
    out = pd.DataFrame({
        "rows": grouped.size().astype(np.int64),
        "days_present_share": grouped["day"].nunique().astype(np.float64) / max(n_days, 1),
        "et_missing_share": grouped["et_missing"].mean().astype(np.float64),
    })
    out.index.name = "station_id"
    return out


def build_frames(source: str, ds: xr.Dataset, *, settings: Settings, file: Path | None = None,
                 other_source_day: Callable[[str, date], xr.Dataset | None] | None = None) -> Frames:
    """The frames of one batch of ``source`` (see the module docstring)."""
    spec = source_spec(source)
    if spec.kind == "grid":
        return grid_frames(source, ds, settings=settings, file=file, other_source_day=other_source_day)
    return station_frames(source, ds, settings=settings, file=file)


def numeric_summary(frame: pd.DataFrame, column: str) -> Mapping[str, float | None]:
    """min/max of a numeric column (NaN ignored), for the observed values of range checks."""
    if column not in frame or not np.issubdtype(frame[column].dtype, np.number) or frame.empty:
        return {}
    values = frame[column].to_numpy(dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"min": None, "max": None}
    return {"min": float(finite.min()), "max": float(finite.max())}
