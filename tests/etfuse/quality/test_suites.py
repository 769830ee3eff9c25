"""Suites and frames: what each source's suite holds, and the frames it runs on (no GE run here)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from etfuse.cf import annotate
from etfuse.errors import UnknownNameError
from etfuse.quality.frames import SOURCES, build_frames, claimed_period, meta_frame, region_cells
from etfuse.quality.expectations import SEVERITIES
from etfuse.quality.suites import build_suites
from etfuse.sources.cma import EXTRAS as CMA_EXTRAS
from etfuse.sources.stations import point_dataset

TODAY = date(2021, 8, 1)


def grid(settings, variables=("et",), days=("2021-06-30", "2021-07-01"), res=0.1, has=None) -> xr.Dataset:
    r, m = settings.region, settings.region.margin_deg
    lat = np.round(np.arange(np.ceil((r.lat_max + m) / res), np.floor((r.lat_min - m) / res) - 1, -1) * res, 6)
    lon = np.round(np.arange(np.floor((r.lon_min - m) / res), np.ceil((r.lon_max + m) / res) + 1) * res, 6)
    shape = (len(days), lat.size, lon.size)
    ds = xr.Dataset({v: (("time", "lat", "lon"), np.full(shape, 2.0 + k, np.float32)) for k, v in enumerate(variables)},
                    coords={"time": pd.DatetimeIndex(days), "lat": lat, "lon": lon})
    for v, flags in (has or {}).items():
        ds = ds.assign_coords({f"has_{v}": ("time", flags)})
    return annotate(ds, source="test")


def stations(rows: list[tuple[str, str, float, float]]) -> xr.Dataset:
    frame = pd.DataFrame([{"station_id": s, "time": pd.Timestamp(d), "lat": la, "lon": lo, "elevation_m": 2300.0,
                           "et": 2.0} for s, d, la, lo in rows])
    for name in ("pan_evaporation_large", "pan_evaporation_small"):
        frame[name] = np.float32(4.0)
    for name in ("qc_large", "qc_small"):
        frame[name] = np.int8(0)
    frame["pan_used"], frame["elevation_estimated"], frame["special_code"] = "large", False, np.int32(0)
    frame["_file"] = "x"
    return point_dataset(frame, source="cma", paths=[Path("x")], extras=CMA_EXTRAS)


def all_plans(settings):
    era5 = grid(settings, ("et", "net_radiation", "skt"), has={"et": [True, False]})
    era5 = era5.assign_coords(era5_stream=("time", ["final", "ERA5T"]))
    st = stations([("52866", "2021-06-01", 36.73, 101.75)])
    batches = {"era5land": era5, "gleam": grid(settings, res=0.25), "modis": grid(settings, ("lst",), res=0.05),
               "cma": st, "stations": st.drop_vars([v for v in CMA_EXTRAS if v in st]),
               "fluxnet": st.drop_vars([v for v in CMA_EXTRAS if v in st])}
    out = {}
    for source, ds in batches.items():
        frames = build_frames(source, ds, settings=settings, other_source_day=lambda s, d: None)
        out[source] = (frames, build_suites(frames, settings=settings, today=TODAY))
    return out


# --------------------------------------------------------------------------- suites
def test_every_expectation_is_real_ge_with_meta(settings):
    from great_expectations.expectations import Expectation

    for source, (frames, plan) in all_plans(settings).items():
        checks = plan.checks()
        assert len(checks) >= 15, source
        for frame, expectations in plan.suites.items():
            assert frame in frames.tables, (source, frame)
            for e in expectations:
                assert isinstance(e, Expectation)
                assert set(e.meta) == {"severity", "check", "explain"}
                assert e.meta["severity"] in SEVERITIES and e.meta["check"] and e.meta["explain"].endswith(".")


EXPECTED_SEVERITIES = {
    # ERA5-Land batches may hold any subset of their variables (split CDS deliveries): no schema_variables
    "era5land": {"schema_units": "critical", "schema_dims": "critical",
                 "schema_axis_order": "critical", "et_range": "critical", "skt_range": "critical",
                 "net_radiation_range": "critical", "et_units_look_metres": "critical",
                 "skt_units_look_celsius": "critical", "net_radiation_units_look_wrong": "critical",
                 "future_dates": "critical", "duplicate_times": "critical", "region_has_cells": "critical",
                 "region_has_data": "critical", "coverage_north": "warning", "et_missing_share": "warning",
                 "days_contiguous": "warning", "era5t_days": "info", "incomplete_days": "info"},
    "gleam": {"schema_variables": "critical", "et_range": "critical", "et_units_look_metres": "critical", "et_missing_share": "warning"},
    "modis": {"lst_range": "critical", "lst_units_look_celsius": "critical", "lst_missing_share": "warning"},
    "cma": {"region_has_stations": "critical", "station_id_plausible": "critical", "station_id_known": "warning",
            "station_lat_in_area": "warning", "station_location_matches_known": "warning",
            "duplicate_station_days": "critical", "special_code_surviving_pan_evaporation_large": "critical",
            "pan_evaporation_large_range": "critical", "elevation_impossible": "critical",
            "elevation_plausible": "warning", "station_et_missing": "warning", "station_days_present": "warning",
            "station_count": "info", "special_codes_decoded": "info", "stations_in_margin": "info"},
}


@pytest.mark.parametrize("source", sorted(EXPECTED_SEVERITIES))
def test_checks_have_sensible_severities(settings, source):
    _, plan = all_plans(settings)[source]
    got = {e.meta["check"]: e.meta["severity"] for exps in plan.suites.values() for e in exps}
    for check, severity in EXPECTED_SEVERITIES[source].items():
        assert got.get(check) == severity, (source, check, got.get(check))


def test_thresholds_come_from_settings(settings):
    custom = settings.model_copy(update={"quality": settings.quality.model_copy(
        update={"et_max": 12.5, "gleam_max_missing_share": 0.33, "future_tolerance_days": 3})})
    frames = build_frames("gleam", grid(custom, res=0.25), settings=custom)
    plan = build_suites(frames, settings=custom, today=TODAY)
    by_check = {e.meta["check"]: e for exps in plan.suites.values() for e in exps}
    assert by_check["et_range"].max_value == 12.5 and by_check["et_range"].min_value == custom.quality.et_min
    assert by_check["et_missing_share"].max_value == 0.33
    assert by_check["future_dates"].max_value == pd.Timestamp("2021-08-04")


def test_skipped_checks_are_reported(settings):
    plans = all_plans(settings)
    skipped = {s.check: s for s in plans["era5land"][1].skipped}
    assert skipped["drift_et"].reason == "no reference statistics" and skipped["drift_et"].severity == "info"
    assert "no gleam et on these days" in skipped["consistency_et_gleam"].reason


def test_unknown_source_is_refused(settings):
    with pytest.raises(UnknownNameError, match="expected one of"):
        build_frames("nosuch", grid(settings), settings=settings)


# --------------------------------------------------------------------------- frames
def test_cells_frame_holds_region_cells_only_as_float64(settings):
    ds = grid(settings, ("et", "skt"))
    frames = build_frames("era5land", ds, settings=settings)
    cells = frames["cells"]
    rows, cols = region_cells(ds, settings.region)
    r = settings.region
    assert len(cells) == 2 * rows.size * cols.size < 2 * ds.sizes["lat"] * ds.sizes["lon"]
    assert cells["lat"].between(r.lat_min, r.lat_max).all() and cells["lon"].between(r.lon_min, r.lon_max).all()
    assert cells["et"].dtype == np.float64 and cells["skt"].dtype == np.float64 and cells["month"].dtype == np.int64
    assert list(cells["time"].unique()) == [pd.Timestamp("2021-06-30"), pd.Timestamp("2021-07-01")]
    assert frames.months == (6, 7) and frames.region_cell_count == rows.size * cols.size
    assert frames.cell_deg == pytest.approx((0.1, 0.1))


def test_days_frame_shares_ignore_incomplete_days(settings):
    ds = grid(settings, ("et",), has={"et": [True, False]})
    values = ds["et"].values.copy()
    values[1] = np.nan                                         # the incomplete day
    rows, cols = region_cells(ds, settings.region)
    values[0, rows[0], cols[:10]] = np.nan                     # ten missing region cells on day one
    values[0, 0, 0] = np.nan                                   # a margin cell: not counted
    ds["et"] = ds["et"].copy(data=values)
    days = build_frames("era5land", ds, settings=settings)["days"]
    assert list(days.index) == ["2021-06-30", "2021-07-01"] and days.index.name == "day"
    assert days["et_missing_share"].iloc[0] == pytest.approx(10 / (rows.size * cols.size))
    assert np.isnan(days["et_missing_share"].iloc[1])
    assert list(days["incomplete_variables"]) == ["", "et"]
    assert days["gap_days"].iloc[1] == 1.0 and days["seconds_after_midnight"].eq(0).all()


def test_meta_frame_lists_variables_and_expectations(settings):
    ds = grid(settings, ("et",))
    ds["et"].attrs["units"] = "mm"
    meta = meta_frame(ds, "gleam")
    assert meta.loc["et", "units"] == "mm" and meta.loc["et", "expected_units"] == "kg m-2"
    assert meta.loc["et", "dims"] == "time,lat,lon"
    assert meta.loc["lat", "order"] == "descending" and meta.loc["lon", "expected_order"] == "ascending"
    assert pd.isna(meta.loc["time", "expected_units"])                 # nothing expected: GE ignores it


def test_station_frames(settings):
    ds = stations([("52866", "2021-06-01", 36.73, 101.75), ("52866", "2021-06-02", 36.73, 101.75),
                   ("59999", "2021-06-01", 37.8, 101.0)])                     # in the margin, unknown
    frames = build_frames("cma", ds, settings=settings, file=Path("SURF_CLI_CHN_MUL_DAY-EVP-13240-202106.TXT"))
    obs = frames["obs"]
    assert list(obs.index) == ["52866 2021-06-01", "52866 2021-06-02", "59999 2021-06-01"]
    assert list(obs["inside_region"]) == [1, 1, 0]
    assert list(obs["station_id_in_region"].iloc[:2]) == ["52866", "52866"]
    assert pd.isna(obs["station_id_in_region"].iloc[2])                   # margin rows: ignored by GE
    assert obs["distance_to_known_deg"].iloc[0] < 0.01 and np.isnan(obs["distance_to_known_deg"].iloc[2])
    per_station = frames["stations"]
    assert list(per_station.index) == ["52866"]                 # stations inside the region only
    assert per_station.loc["52866", "days_present_share"] == pytest.approx(2 / 30)
    assert frames.claimed == (date(2021, 6, 1), date(2021, 6, 30))


@pytest.mark.parametrize("source, name, period", [
    ("gleam", "E_2020_GLEAM_v3.7a.nc", (date(2020, 1, 1), date(2020, 12, 31))),
    ("modis", "MOD11A1.A2021032.h25v05.061.2021033.hdf", (date(2021, 2, 1), date(2021, 2, 1))),
    ("cma", "SURF_CLI_CHN_MUL_DAY-EVP-13240-202102.TXT", (date(2021, 2, 1), date(2021, 2, 28))),
    ("fluxnet", "FLX_CN-HaM_FLUXNET2015_FULLSET_DD_2002-2004_1-4.csv", (date(2002, 1, 1), date(2004, 12, 31))),
    ("era5land", "era5land_202102.nc", None),
    ("gleam", "whatever.nc", None),
])
def test_claimed_period(source, name, period):
    assert claimed_period(source, [name]) == period


def test_every_source_has_a_spec():
    assert set(SOURCES) == {"era5land", "gleam", "modis", "cma", "stations", "fluxnet"}
