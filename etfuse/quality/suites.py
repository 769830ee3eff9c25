"""Expectation suites per source: which Great Expectations expectations run on which frame.

``build_suites(source, frames, ...)`` returns a :class:`SuitePlan`: for each frame of
:mod:`etfuse.quality.frames` (``meta``, ``cells``, ``days`` for grids; ``meta``, ``obs``,
``stations`` for stations) a list of real GE expectations, each carrying
``meta={"severity": ..., "check": short_name, "explain": one sentence}``, plus the checks that
could not run (``skipped``, reported as info, e.g. drift without reference statistics).

Severities (docs/validation.md lists every check):

* critical -> the file is quarantined: schema (variables, dimensions, coordinate names and order,
  units attributes), physical ranges, units that look wrong, future dates, duplicate times,
  days outside the period the file name claims, nothing inside the region, CMA special codes
  surviving as numbers, impossible elevations, implausible station ids;
* warning -> accepted and alerted: completeness, partial region coverage, gaps between days,
  stations outside the region or far from their known location, unknown station ids,
  implausible elevations, consistency between sources, drift;
* info -> reported: ERA5T share, incomplete ERA5-Land days, station count, decoded CMA codes.

Every threshold comes from ``settings.quality`` (etfuse/settings.py ``QualitySettings``).
Great Expectations is imported on first use only (the import costs seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Mapping

import numpy as np
import pandas as pd

from etfuse.quality.drift import drift_expectations
from etfuse.quality.expectations import Skipped, expectation
from etfuse.quality.frames import CONSISTENCY_PAIRS, Frames, consistency_column, source_spec
from etfuse.settings import Settings
from etfuse.stations_meta import known_locations

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

#: variable -> (settings.quality key of the minimum, of the maximum) in canonical units
RANGES: dict[str, tuple[str, str]] = {
    "et": ("et_min", "et_max"),
    "net_radiation": ("net_radiation_min", "net_radiation_max"),
    "skt": ("skt_min_k", "skt_max_k"),
    "t2m": ("t2m_min_k", "t2m_max_k"),
    "lst": ("lst_min_k", "lst_max_k"),
    "precipitation": ("precipitation_min", "precipitation_max"),
    "pan_evaporation_large": ("pan_evaporation_min", "pan_evaporation_max"),
    "pan_evaporation_small": ("pan_evaporation_min", "pan_evaporation_max"),
    "latent_heat_flux": ("latent_heat_flux_min", "latent_heat_flux_max"),
}
RANGE_UNITS = {"et": "kg m-2", "net_radiation": "MJ m-2", "skt": "K", "t2m": "K", "lst": "K",
               "precipitation": "kg m-2", "pan_evaporation_large": "kg m-2", "pan_evaporation_small": "kg m-2",
               "latent_heat_flux": "W m-2"}
TEMPERATURES = ("skt", "t2m", "lst")

#: Plausible station ids per station source (regular expressions).
STATION_ID_PATTERNS: dict[str, str] = {
    "cma": r"^\d{5}$",                                  # CMA national station number
    "fluxnet": r"^[A-Z]{2}-[A-Za-z0-9]{3}$",            # FLUXNET site id, e.g. CN-HaM
    "stations": r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}$",  # any short plain id (e.g. LYS-52866)
}
#: CMA columns a surviving special code (>= 30000 raw) would show up in.
CMA_CODE_COLUMNS = ("pan_evaporation_large", "pan_evaporation_small", "et")


@dataclass
class SuitePlan:
    source: str
    #: frame name -> expectations run on it
    suites: dict[str, list["Expectation"]] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)

    def add(self, frame: str, *expectations: "Expectation") -> None:
        self.suites.setdefault(frame, []).extend(expectations)

    def checks(self) -> list[str]:
        return [e.meta["check"] for exps in self.suites.values() for e in exps]


# --------------------------------------------------------------------------- shared pieces
def _ts(day: date) -> pd.Timestamp:
    return pd.Timestamp(day)


def _schema(plan: SuitePlan, frames: Frames, coordinates: tuple[str, ...]) -> None:
    """Variables and coordinates present; units, dimensions and axis order as the readers promise."""
    spec = source_spec(frames.source)
    plan.add("meta", expectation(
        "ExpectColumnDistinctValuesToContainSet", "schema_coordinates", "critical",
        f"The batch must have the coordinates {', '.join(coordinates)} (names as the readers write them).",
        column="name", value_set=list(coordinates)))
    if spec.required:
        plan.add("meta", expectation(
            "ExpectColumnDistinctValuesToContainSet", "schema_variables", "critical",
            f"Every {frames.source} batch must hold the variables {', '.join(spec.required)}.",
            column="name", value_set=list(spec.required)))
    plan.add("meta", expectation(
        "ExpectColumnPairValuesToBeEqual", "schema_units", "critical",
        "Every variable and lat/lon must carry its canonical units attribute (etfuse/cf.py).",
        column_A="units", column_B="expected_units", ignore_row_if="either_value_is_missing"))
    plan.add("meta", expectation(
        "ExpectColumnPairValuesToBeEqual", "schema_dims", "critical",
        "Every variable must have the reader's dimensions (time, lat, lon for grids; obs for stations).",
        column_A="dims", column_B="expected_dims", ignore_row_if="either_value_is_missing"))
    if frames.kind == "grid":
        plan.add("meta", expectation(
            "ExpectColumnPairValuesToBeEqual", "schema_axis_order", "critical",
            "Latitude must run north to south and longitude west to east.",
            column_A="order", column_B="expected_order", ignore_row_if="either_value_is_missing"))


def _ranges(plan: SuitePlan, frame: str, frames: Frames, settings: Settings) -> None:
    q = settings.quality
    mostly = q.range_mostly if q.range_mostly < 1 else None
    for name in frames.variables:
        if name not in RANGES:
            continue
        low, high = (getattr(q, key) for key in RANGES[name])
        plan.add(frame, expectation(
            "ExpectColumnValuesToBeBetween", f"{name}_range", "critical",
            f"{name} must lie within the physical range {low:g}..{high:g} {RANGE_UNITS[name]} "
            f"(quality.{RANGES[name][0]}, quality.{RANGES[name][1]}).",
            column=name, min_value=float(low), max_value=float(high), mostly=mostly))


def _dates(plan: SuitePlan, frame: str, frames: Frames, settings: Settings, today: date) -> None:
    q = settings.quality
    latest = today + timedelta(days=q.future_tolerance_days)
    plan.add(frame, expectation(
        "ExpectColumnValuesToBeBetween", "future_dates", "critical",
        f"No day may lie after today ({today.isoformat()}) plus quality.future_tolerance_days "
        f"({q.future_tolerance_days}).", column="time", max_value=_ts(latest)))
    plan.add(frame, expectation(
        "ExpectColumnValuesToBeInSet", "time_is_day_label", "critical",
        "Times must be day labels at 00:00 (readers label each day at its start).",
        column="seconds_after_midnight", value_set=[0]))
    if frames.claimed is not None:
        start, end = frames.claimed
        plan.add(frame, expectation(
            "ExpectColumnValuesToBeBetween", "days_claimed", "critical",
            f"The file name claims {start.isoformat()}..{end.isoformat()}; every day must lie in that period.",
            column="time", min_value=_ts(start), max_value=_ts(end)))


def _drift(plan: SuitePlan, frame: str, frames: Frames, settings: Settings, reference_stats: Mapping | None) -> None:
    expectations, skipped = drift_expectations(frames, reference_stats, settings=settings, frame=frame)
    plan.add(frame, *expectations)
    plan.skipped.extend(skipped)


# --------------------------------------------------------------------------- grids
def _grid_suites(plan: SuitePlan, frames: Frames, settings: Settings, today: date,
                 reference_stats: Mapping | None) -> None:
    q = settings.quality
    region = settings.region
    _schema(plan, frames, ("time", "lat", "lon"))

    # cells: nothing inside the region, coverage of each edge, physical ranges
    plan.add("cells", expectation(
        "ExpectTableRowCountToBeBetween", "region_has_cells", "critical",
        "At least one source cell centre must fall inside the region (not only in the margin).", min_value=1))
    dlat, dlon = frames.cell_deg
    tol = q.edge_tolerance_cells
    eps = 1e-6
    edges = (("north", "ExpectColumnMaxToBeBetween", "lat", region.lat_max - tol * dlat, region.lat_max),
             ("south", "ExpectColumnMinToBeBetween", "lat", region.lat_min, region.lat_min + tol * dlat),
             ("west", "ExpectColumnMinToBeBetween", "lon", region.lon_min, region.lon_min + tol * dlon),
             ("east", "ExpectColumnMaxToBeBetween", "lon", region.lon_max - tol * dlon, region.lon_max))
    for edge, kind, column, lo, hi in edges:
        check = f"coverage_{edge}"
        lo, hi = lo - eps, hi + eps
        plan.add("cells", expectation(
            kind, check, "warning",
            f"The source's cells inside the region must reach its {edge} edge within "
            f"quality.edge_tolerance_cells ({tol:g}) source cells.",
            column=column, min_value=float(lo), max_value=float(hi)))
    _ranges(plan, "cells", frames, settings)

    # days: dates, duplicates, gaps, data present, units, completeness, info
    plan.add("days", expectation(
        "ExpectTableRowCountToBeBetween", "batch_has_days", "critical", "The batch must hold at least one day.",
        min_value=1))
    plan.add("days", expectation(
        "ExpectColumnValuesToBeUnique", "duplicate_times", "critical", "Each day may appear only once.",
        column="time"))
    _dates(plan, "days", frames, settings, today)
    if len(frames.days) > 1:
        plan.add("days", expectation(
            "ExpectColumnValuesToBeBetween", "days_contiguous", "warning",
            "Days must follow each other without gaps.", column="gap_days", min_value=1.0, max_value=1.0))
    plan.add("days", expectation(
        "ExpectColumnMaxToBeBetween", "region_has_data", "critical",
        "At least one region cell must hold a value on at least one day.", column="valid_cells", min_value=1))
    if "et" in frames.variables:
        plan.add("days", expectation(
            "ExpectColumnMaxToBeBetween", "et_units_look_metres", "critical",
            f"The batch's largest ET over the region below quality.et_units_min_largest "
            f"({q.et_units_min_largest:g} kg m-2) looks like metres labelled mm.",
            column="et_max", min_value=float(q.et_units_min_largest)))
    if "net_radiation" in frames.variables:
        plan.add("days", expectation(
            "ExpectColumnMaxToBeBetween", "net_radiation_units_look_wrong", "critical",
            f"The batch's largest |net radiation| over the region below quality.net_radiation_units_min_largest "
            f"({q.net_radiation_units_min_largest:g} MJ m-2) means a wrong unit (e.g. MJ labelled J).",
            column="net_radiation_absmax", min_value=float(q.net_radiation_units_min_largest)))
    for name in frames.variables:
        if name in TEMPERATURES:
            plan.add("days", expectation(
                "ExpectColumnValuesToBeBetween", f"{name}_units_look_celsius", "critical",
                f"A day whose mean {name} over the region is below quality.temperature_units_min_daily_mean_k "
                f"({q.temperature_units_min_daily_mean_k:g} K) looks like degrees Celsius labelled K.",
                column=f"{name}_mean", min_value=float(q.temperature_units_min_daily_mean_k)))
        max_share = getattr(q, f"{frames.source}_max_missing_share")
        plan.add("days", expectation(
            "ExpectColumnValuesToBeBetween", f"{name}_missing_share", "warning",
            f"At most quality.{frames.source}_max_missing_share ({max_share:g}) of the region's cells may "
            f"lack {name} on a day (days a variable is incomplete by design are not counted).",
            column=f"{name}_missing_share", min_value=0.0, max_value=float(max_share)))
    if any(f"has_{name}" in frames["days"] for name in frames.variables):
        plan.add("days", expectation(
            "ExpectColumnValuesToBeInSet", "incomplete_days", "info",
            "Days with variables that need steps from another file (the store completes them when it arrives).",
            column="incomplete_variables", value_set=[""]))
    if "era5_stream" in frames["days"]:
        plan.add("days", expectation(
            "ExpectColumnValuesToBeInSet", "era5t_days", "info",
            "Days built from preliminary ERA5T steps (replaced by final data 2-3 months later).",
            column="era5_stream", value_set=["final"]))
    _consistency(plan, frames, settings)
    _drift(plan, "cells", frames, settings, reference_stats)


def _consistency(plan: SuitePlan, frames: Frames, settings: Settings) -> None:
    q = settings.quality
    for name in frames.variables:
        pair = CONSISTENCY_PAIRS.get((frames.source, name))
        if pair is None:
            continue
        other, other_name, key = pair
        column = consistency_column(name, other, other_name)
        check = f"consistency_{name}_{other}"
        if column not in frames.consistency:
            plan.skipped.append(Skipped(check, "days", f"not compared with {other} {other_name}: the validation "
                                                      "context gives no other_source_day"))
            continue
        if not np.isfinite(frames["days"][column].to_numpy(dtype=np.float64)).any():
            plan.skipped.append(Skipped(check, "days", f"not compared: no {other} {other_name} on these days"))
            continue
        bound = float(getattr(q, key))
        unit = "K" if name in TEMPERATURES else "kg m-2"
        plan.add("days", expectation(
            "ExpectColumnValuesToBeBetween", check, "warning",
            f"The region means of {frames.source} {name} and {other} {other_name} on the same day may differ "
            f"by at most quality.{key} ({bound:g} {unit}) on at least quality.consistency_min_share_of_days "
            f"({q.consistency_min_share_of_days:g}) of the days.", column=column, min_value=0.0, max_value=bound,
            mostly=q.consistency_min_share_of_days))


# --------------------------------------------------------------------------- stations
def _station_suites(plan: SuitePlan, frames: Frames, settings: Settings, today: date, reference_stats: Mapping | None,
                    known_station_ids: frozenset[str] | None) -> None:
    q = settings.quality
    region = settings.region
    source = frames.source
    obs = frames["obs"]
    _schema(plan, frames, ("station_id", "time", "lat", "lon"))

    plan.add("obs", expectation(
        "ExpectColumnSumToBeBetween", "region_has_stations", "critical",
        "At least one station row must lie inside the region.", column="inside_region", min_value=1))
    plan.add("outside", expectation(
        "ExpectTableRowCountToEqual", "known_station_outside_area", "warning",
        "A station the project knows (CMA Qinghai list, FLUXNET sites) placed outside the region plus margin has "
        "wrong coordinates; its rows were dropped by the reader.", value=0))
    m = region.margin_deg
    area = (("lat", region.lat_min - m, region.lat_max + m), ("lon", region.lon_min - m, region.lon_max + m))
    for axis, low, high in area:
        plan.add("obs", expectation(
            "ExpectColumnValuesToBeBetween", f"station_{axis}_in_area", "warning",
            f"Station {'latitudes' if axis == 'lat' else 'longitudes'} should lie inside the region plus its "
            f"margin ({low:g}..{high:g}), the area the readers keep.",
            column=axis, min_value=float(low), max_value=float(high)))
    plan.add("obs", expectation(
        "ExpectColumnValuesToBeInSet", "stations_in_margin", "info",
        "Station rows in the margin around the region (kept for the edges, not on the target grid).",
        column="inside_region", value_set=[1]))
    plan.add("obs", expectation(
        "ExpectColumnValuesToBeBetween", "station_location_matches_known", "warning",
        f"A known station should lie within quality.station_location_tolerance_deg "
        f"({q.station_location_tolerance_deg:g} deg) of its location in the facts tables.",
        column="distance_to_known_deg", max_value=float(q.station_location_tolerance_deg)))
    plan.add("obs", expectation(
        "ExpectColumnValuesToMatchRegex", "station_id_plausible", "critical",
        f"{source} station ids must look like {STATION_ID_PATTERNS[source]!r}.",
        column="station_id", regex=STATION_ID_PATTERNS[source]))
    known = sorted(known_station_ids if known_station_ids is not None else frozenset(known_locations().index))
    plan.add("obs", expectation(
        "ExpectColumnValuesToBeInSet", "station_id_known", "warning",
        "Stations inside the region should be known (facts tables or the context's known_station_ids).",
        column="station_id_in_region", value_set=known))
    plan.add("obs", expectation(
        "ExpectCompoundColumnsToBeUnique", "duplicate_station_days", "critical",
        "Each station may have one row per day.", column_list=["station_id", "time"]))
    _dates(plan, "obs", frames, settings, today)
    _ranges(plan, "obs", frames, settings)
    if "qc_fraction" in frames.variables:
        plan.add("obs", expectation(
            "ExpectColumnValuesToBeBetween", "qc_fraction_range", "critical",
            "The FLUXNET quality fraction lies in 0..1.", column="qc_fraction", min_value=0.0, max_value=1.0))
    if "et" in obs and np.isfinite(obs["et"].to_numpy(dtype=np.float64)).any():
        plan.add("obs", expectation(
            "ExpectColumnMaxToBeBetween", "et_units_look_metres", "critical",
            f"The batch's largest station ET below quality.et_units_min_largest "
            f"({q.et_units_min_largest:g} kg m-2) looks like metres labelled mm.",
            column="et", min_value=float(q.et_units_min_largest)))
    plan.add("obs", expectation(
        "ExpectColumnValuesToBeBetween", "elevation_impossible", "critical",
        f"Elevations outside quality.station_elevation_impossible_below_m..above_m "
        f"({q.station_elevation_impossible_below_m:g}..{q.station_elevation_impossible_above_m:g} m) are "
        "undecoded codes or flags.", column="elevation_m",
        min_value=float(q.station_elevation_impossible_below_m), max_value=float(q.station_elevation_impossible_above_m)))
    plan.add("obs", expectation(
        "ExpectColumnValuesToBeBetween", "elevation_plausible", "warning",
        f"Station elevations should lie within quality.station_elevation_min_m..max_m "
        f"({q.station_elevation_min_m:g}..{q.station_elevation_max_m:g} m).", column="elevation_m",
        min_value=float(q.station_elevation_min_m), max_value=float(q.station_elevation_max_m)))
    if source == "cma":
        for column in CMA_CODE_COLUMNS:
            plan.add("obs", expectation(
                "ExpectColumnValuesToBeBetween", f"special_code_surviving_{column}", "critical",
                f"{column} values of quality.cma_special_code_min ({q.cma_special_code_min:g} kg m-2, i.e. raw "
                "30000+) or more are CMA special codes that survived as numbers.",
                column=column, max_value=float(q.cma_special_code_min), strict_max=True))
        for column in ("qc_large", "qc_small"):
            plan.add("obs", expectation(
                "ExpectColumnValuesToBeInSet", f"{column}_codes", "critical",
                "CMA QC codes are single digits 0-9.", column=column, value_set=list(range(10))))
        plan.add("obs", expectation(
            "ExpectColumnValuesToBeInSet", "special_codes_decoded", "info",
            "Rows whose pan value was a CMA special code other than trace/missing (decoded as missing).",
            column="special_code", value_set=[0]))
    plan.add("obs", expectation(
        "ExpectColumnValuesToNotBeNull", "station_et_missing", "warning",
        f"At most quality.station_max_missing_share ({q.station_max_missing_share:g}) of station-days may lack ET.",
        column="et", mostly=float(1.0 - q.station_max_missing_share) if q.station_max_missing_share < 1 else None))
    plan.add("obs", expectation(
        "ExpectColumnUniqueValueCountToBeBetween", "station_count", "info", "Number of stations in the batch.",
        column="station_id", min_value=1))
    plan.add("stations", expectation(
        "ExpectColumnValuesToBeBetween", "station_days_present", "warning",
        f"Each station inside the region should have rows for at least quality.station_min_days_present_share "
        f"({q.station_min_days_present_share:g}) of the batch's days (the file name's period when it claims one).",
        column="days_present_share", min_value=float(q.station_min_days_present_share)))
    _drift(plan, "obs", frames, settings, reference_stats)


def build_suites(frames: Frames, *, settings: Settings, today: date, reference_stats: Mapping | None = None,
                 known_station_ids: frozenset[str] | None = None) -> SuitePlan:
    """The expectations of ``frames.source`` for this batch, grouped by frame."""
    plan = SuitePlan(frames.source)
    if frames.kind == "grid":
        _grid_suites(plan, frames, settings, today, reference_stats)
    else:
        _station_suites(plan, frames, settings, today, reference_stats, known_station_ids)
    return plan
