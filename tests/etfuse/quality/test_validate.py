"""validate(): each check both ways on tiny reader-shaped batches, and on the small world's real files."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from etfuse.cf import annotate
from etfuse.errors import UnknownNameError
from etfuse.quality import CheckOutcome, ValidationContext, ValidationResult, validate
from etfuse.sources import read_source
from etfuse.sources.cma import EXTRAS as CMA_EXTRAS
from etfuse.sources.fluxnet import EXTRAS as FLUXNET_EXTRAS
from etfuse.sources.stations import point_dataset
from etfuse.synth.writers_stations import write_cma_evp_month

TODAY = date(2021, 8, 1)
CTX = ValidationContext(today=TODAY)
#: CMA stations inside the "test" region (100.5-102.5 E, 35.5-37.5 N)
STATIONS = {"52866": (36.7333, 101.75, 2295.2), "52862": (36.95, 101.6833, 2450.0), "52855": (36.6833, 101.25, 2675.0)}


# --------------------------------------------------------------------------- builders
@pytest.fixture
def qs(settings):
    """Test-region settings without HTML reports (report tests switch them on)."""
    return settings.model_copy(update={"quality": settings.quality.model_copy(update={"write_reports": False})})


def _axis(low: float, high: float, res: float, on_multiples: bool) -> np.ndarray:
    if on_multiples:
        return np.round(np.arange(np.floor(low / res), np.ceil(high / res) + 1) * res, 6)
    return np.round(np.arange(np.floor(low / res) * res + res / 2, high + res / 2, res), 6)


def grid_ds(settings, source: str, days=("2021-07-01", "2021-07-02"), *, seed: int = 0,
            lon_max: float | None = None) -> xr.Dataset:
    """A reader-shaped gridded batch over the region plus margin at the source's native lattice."""
    r, m = settings.region, settings.region.margin_deg
    res, multiples = {"era5land": (0.1, True), "gleam": (0.25, False), "modis": (0.05, False)}[source]
    lat = _axis(r.lat_min - m, r.lat_max + m, res, multiples)[::-1]
    lon = _axis(r.lon_min - m, (lon_max if lon_max is not None else r.lon_max) + m, res, multiples)
    rng = np.random.default_rng(seed)
    shape = (len(days), lat.size, lon.size)

    def field(mean, sd):
        return (mean + sd * rng.standard_normal(shape)).astype(np.float32)

    times = pd.DatetimeIndex(days)
    coords = {"time": times, "lat": lat, "lon": lon}
    if source == "era5land":
        data = {"et": np.clip(field(2.5, 0.8), 0, None), "net_radiation": field(11.0, 2.0), "skt": field(288.0, 4.0)}
        coords.update({"era5_stream": ("time", ["final"] * len(days)),
                       **{f"has_{v}": ("time", [True] * len(days)) for v in data}})
    elif source == "gleam":
        data = {"et": np.clip(field(3.0, 1.0), 0, None)}
    else:
        lst = field(300.0, 5.0)
        lst[rng.random(shape) < 0.3] = np.nan                    # clouds
        data = {"lst": lst}
    ds = xr.Dataset({k: (("time", "lat", "lon"), v) for k, v in data.items()}, coords=coords)
    return annotate(ds, source=source, source_files="batch.nc")


def station_ds(source: str = "cma", *, month: str = "2021-06", stations=STATIONS, rows=None) -> xr.Dataset:
    """A reader-shaped station batch (built by the readers' own point_dataset), one row per station-day."""
    days = pd.date_range(month, periods=pd.Period(month).days_in_month, freq="D")
    frame = []
    for sid, (lat, lon, elevation) in stations.items():
        for k, day in enumerate(days):
            frame.append({"station_id": sid, "time": day, "lat": lat, "lon": lon, "elevation_m": elevation,
                          "et": 2.0 + 0.1 * (k % 5)})
    frame = pd.DataFrame(frame)
    if rows is not None:
        frame = rows(frame)
    extras = None
    if source == "cma":
        frame["pan_evaporation_large"] = (frame["et"] / 0.5).astype(np.float32)
        frame["pan_evaporation_small"] = (frame["et"] / 0.35).astype(np.float32)
        frame["qc_large"] = np.zeros(len(frame), np.int8)
        frame["qc_small"] = np.zeros(len(frame), np.int8)
        frame["pan_used"] = "large"
        frame["elevation_estimated"] = False
        frame["special_code"] = np.zeros(len(frame), np.int32)
        extras = CMA_EXTRAS
    elif source == "fluxnet":
        frame["latent_heat_flux"] = (frame["et"] * 2.45e6 / 86400).astype(np.float32)
        frame["qc_fraction"] = np.float32(0.9)
        extras = FLUXNET_EXTRAS
    frame["_file"] = "batch"
    return point_dataset(frame, source=source, paths=[Path("batch")], extras=extras)


def set_values(ds: xr.Dataset, name: str, rows, value) -> None:
    values = ds[name].values.copy()
    values[rows] = value
    ds[name] = ds[name].copy(data=values)


def outcome(result: ValidationResult, check: str) -> CheckOutcome:
    found = [o for o in result.outcomes if o.check == check]
    assert found, f"no outcome {check!r}; have {sorted({o.check for o in result.outcomes})}"
    return found[0]


def failed(result: ValidationResult) -> dict[str, str]:
    return {o.check: o.severity for o in result.outcomes if not o.success}


def assert_fails(result: ValidationResult, check: str, severity: str) -> CheckOutcome:
    o = outcome(result, check)
    assert not o.success, f"{check} passed: {o.observed}"
    assert o.severity == severity
    assert o.expectation.startswith("expect_"), o.expectation
    return o


# --------------------------------------------------------------------------- good batches pass
@pytest.mark.parametrize("source", ["era5land", "gleam", "modis"])
def test_good_grid_batch_passes_every_check(qs, source):
    result = validate(source, grid_ds(qs, source), settings=qs, context=CTX)
    assert result.accepted
    assert failed(result) == {}
    ran = [o for o in result.outcomes if o.expectation != "skipped"]
    assert len(ran) >= 15
    assert all(o.severity in ("critical", "warning", "info") and o.explain for o in result.outcomes)
    assert result.days == [date(2021, 7, 1), date(2021, 7, 2)]
    json.dumps(result.to_json())


@pytest.mark.parametrize("source", ["cma", "stations", "fluxnet"])
def test_good_station_batch_passes_every_check(qs, source):
    stations = {"CN-HaM": (37.37, 101.18, 3250.0)} if source == "fluxnet" else STATIONS
    result = validate(source, station_ds(source, stations=stations), settings=qs, context=CTX)
    assert failed(result) == {}
    assert result.accepted and result.warnings == []
    assert outcome(result, "station_count").observed["observed_value"] == len(stations)


def test_real_cma_file_roundtrip_passes(qs, tmp_path):
    days = pd.date_range("2021-06-01", "2021-06-30")
    table = pd.DataFrame([{"station_id": sid, "lat": lat, "lon": lon, "elevation_m": el, "elevation_estimated": False,
                           "date": d, "pan_small_mm": 5.0, "pan_large_mm": 4.0, "qc_small": 0, "qc_large": 0}
                          for sid, (lat, lon, el) in STATIONS.items() for d in days])
    path = write_cma_evp_month(tmp_path / "SURF_CLI_CHN_MUL_DAY-EVP-13240-202106.TXT", table)
    ds = read_source("cma", path, settings=qs)
    result = validate("cma", ds, settings=qs, file=path, context=CTX)
    assert failed(result) == {}
    assert outcome(result, "days_claimed").success


# --------------------------------------------------------------------------- units errors
@pytest.mark.parametrize("source", ["gleam", "era5land"])
def test_et_in_metres_labelled_mm_is_critical(qs, source):
    ds = grid_ds(qs, source)
    ds["et"] = ds["et"] / 1000.0                                   # metres, attribute still kg m-2
    result = validate(source, ds, settings=qs, context=CTX)
    assert not result.accepted
    o = assert_fails(result, "et_units_look_metres", "critical")
    assert o.observed["observed_value"] < qs.quality.et_units_min_largest
    assert o.expected["min_value"] == qs.quality.et_units_min_largest
    assert outcome(result, "et_range").success                      # the values are "in range", only tiny


def test_lst_in_celsius_labelled_kelvin_is_critical(qs):
    ds = grid_ds(qs, "modis")
    ds["lst"] = ds["lst"] - 273.15
    result = validate("modis", ds, settings=qs, context=CTX)
    assert not result.accepted
    rng = assert_fails(result, "lst_range", "critical")
    assert rng.observed["max"] < 60 and rng.observed["unexpected_percent"] == 100.0
    celsius = assert_fails(result, "lst_units_look_celsius", "critical")
    assert celsius.observed["unexpected_where"] == ["2021-07-01", "2021-07-02"]


def test_net_radiation_in_wrong_unit_is_critical(qs):
    ds = grid_ds(qs, "era5land")
    ds["net_radiation"] = ds["net_radiation"] / 1e6                 # MJ labelled J, divided again
    result = validate("era5land", ds, settings=qs, context=CTX)
    assert_fails(result, "net_radiation_units_look_wrong", "critical")


def test_value_outside_physical_range_names_where(qs):
    ds = grid_ds(qs, "gleam")
    ds["et"][1, 3, 4] = 500.0                                      # a margin cell would not count
    lat, lon = float(ds["lat"][3]), float(ds["lon"][4])
    assert qs.region.lat_min <= lat <= qs.region.lat_max and qs.region.lon_min <= lon <= qs.region.lon_max
    o = assert_fails(validate("gleam", ds, settings=qs, context=CTX), "et_range", "critical")
    assert o.observed["unexpected_count"] == 1 and o.observed["unexpected_examples"] == [500.0]
    assert o.observed["max"] == 500.0
    assert o.observed["unexpected_where"] == [{"time": "2021-07-02", "lat": round(lat, 4), "lon": round(lon, 4)}]


def test_value_outside_range_in_the_margin_is_not_checked(qs):
    ds = grid_ds(qs, "gleam")
    ds["et"][0, 0, 0] = 500.0                                      # north-west corner: margin
    assert validate("gleam", ds, settings=qs, context=CTX).accepted


# --------------------------------------------------------------------------- schema
def test_wrong_units_attribute_is_critical(qs):
    ds = grid_ds(qs, "era5land")
    ds["skt"].attrs["units"] = "degC"
    o = assert_fails(validate("era5land", ds, settings=qs, context=CTX), "schema_units", "critical")
    assert o.observed["unexpected_where"] == ["skt"]


def test_missing_variable_and_wrong_dims_are_critical(qs):
    ds = grid_ds(qs, "gleam").rename({"et": "E"})
    assert assert_fails(validate("gleam", ds, settings=qs, context=CTX), "schema_variables", "critical").observed["missing"] == ["et"]
    ds = grid_ds(qs, "era5land").drop_vars("skt")        # a split ERA5-Land delivery: fine without skt
    ds["et"] = ds["et"].transpose("time", "lon", "lat")
    result = validate("era5land", ds, settings=qs, context=CTX)
    assert "schema_variables" not in result.failed_checks()
    assert assert_fails(result, "schema_dims", "critical").observed["unexpected_where"] == ["et"]


def test_latitude_ascending_is_critical(qs):
    ds = grid_ds(qs, "gleam").isel(lat=slice(None, None, -1))
    o = assert_fails(validate("gleam", ds, settings=qs, context=CTX), "schema_axis_order", "critical")
    assert o.observed["unexpected_where"] == ["lat"]


# --------------------------------------------------------------------------- coverage and dates
def test_future_dates_with_injected_today(qs):
    ds = grid_ds(qs, "era5land", days=("2021-07-01", "2021-07-02", "2021-07-03"))
    ctx = ValidationContext(today=date(2021, 7, 1))                 # tolerance 1 day: 07-02 ok, 07-03 not
    o = assert_fails(validate("era5land", ds, settings=qs, context=ctx), "future_dates", "critical")
    assert o.observed["unexpected_where"] == ["2021-07-03"]
    assert validate("era5land", ds, settings=qs, context=ValidationContext(today=date(2021, 7, 2))).accepted


def test_duplicate_times_are_critical(qs):
    ds = grid_ds(qs, "modis", days=("2021-07-01", "2021-07-01"))
    o = assert_fails(validate("modis", ds, settings=qs, context=CTX), "duplicate_times", "critical")
    assert o.observed["unexpected_count"] == 2


def test_days_outside_the_claimed_period_are_critical(qs):
    result = validate("gleam", grid_ds(qs, "gleam"), settings=qs, file=Path("E_2020_GLEAM_v3.7a.nc"), context=CTX)
    o = assert_fails(result, "days_claimed", "critical")
    assert o.expected["max_value"] == "2020-12-31"
    ok = validate("gleam", grid_ds(qs, "gleam"), settings=qs, file=Path("E_2021_GLEAM_v3.7a.nc"), context=CTX)
    assert outcome(ok, "days_claimed").success


def test_gap_between_days_is_a_warning(qs):
    result = validate("gleam", grid_ds(qs, "gleam", days=("2021-07-01", "2021-07-04")), settings=qs, context=CTX)
    assert result.accepted
    assert assert_fails(result, "days_contiguous", "warning").observed["unexpected_examples"] == [3.0]


def test_nothing_inside_the_region_is_critical(qs):
    ds = grid_ds(qs, "era5land")
    ds = ds.isel(lat=np.flatnonzero(ds["lat"].values > qs.region.lat_max + 0.01))    # northern margin only
    result = validate("era5land", ds, settings=qs, context=CTX)
    assert_fails(result, "region_has_cells", "critical")
    assert_fails(result, "region_has_data", "critical")


def test_partly_covered_region_is_a_warning(qs):
    ds = grid_ds(qs, "gleam", lon_max=101.5)                        # eastern half missing (margin 0.5)
    ds = ds.isel(lon=np.flatnonzero(ds["lon"].values < 101.5))
    result = validate("gleam", ds, settings=qs, context=CTX)
    assert result.accepted
    o = assert_fails(result, "coverage_east", "warning")
    assert o.observed["observed_value"] < 101.5
    assert outcome(result, "coverage_west").success


# --------------------------------------------------------------------------- completeness
def test_incomplete_era5_days_are_not_missing_cells(qs):
    ds = grid_ds(qs, "era5land")
    ds["et"][1] = np.nan
    ds = ds.assign_coords(has_et=("time", [True, False]))
    result = validate("era5land", ds, settings=qs, context=CTX)
    assert result.accepted and result.warnings == []
    info = outcome(result, "incomplete_days")
    assert info.severity == "info" and not info.success and info.observed["unexpected_where"] == ["2021-07-02"]


def test_missing_cells_over_land_are_a_warning(qs):
    ds = grid_ds(qs, "era5land")
    et = ds["et"].values
    et[0, : et.shape[1] // 2] = np.nan                             # half the grid on day one
    result = validate("era5land", ds, settings=qs, context=CTX)
    assert result.accepted
    o = assert_fails(result, "et_missing_share", "warning")
    assert o.observed["unexpected_where"] == ["2021-07-01"] and 0.3 < o.observed["unexpected_examples"][0] < 0.7


def test_modis_cloud_gaps_are_normal_but_a_cloud_covered_day_warns(qs):
    ds = grid_ds(qs, "modis")
    assert validate("modis", ds, settings=qs, context=CTX).warnings == []      # 30 % gaps
    ds["lst"][0] = np.where(np.random.default_rng(1).random(ds["lst"][0].shape) < 0.98, np.nan, ds["lst"][0])
    result = validate("modis", ds, settings=qs, context=CTX)
    assert result.accepted
    assert_fails(result, "lst_missing_share", "warning")


# --------------------------------------------------------------------------- consistency
def test_consistency_between_gleam_and_era5land(qs):
    gleam = grid_ds(qs, "gleam")
    era5 = grid_ds(qs, "era5land")

    close = ValidationContext(today=TODAY, other_source_day=lambda src, day: era5 if src == "era5land" else None)
    assert outcome(validate("gleam", gleam, settings=qs, context=close), "consistency_et_era5land").success

    shifted = era5.copy(deep=True)
    shifted["et"] = shifted["et"] + 10.0
    far = ValidationContext(today=TODAY, other_source_day=lambda src, day: shifted if src == "era5land" else None)
    result = validate("gleam", gleam, settings=qs, context=far)
    assert result.accepted
    o = assert_fails(result, "consistency_et_era5land", "warning")
    assert o.observed["unexpected_count"] == 2 and all(v > 8 for v in o.observed["unexpected_examples"])

    nothing = ValidationContext(today=TODAY, other_source_day=lambda src, day: None)
    skipped = outcome(validate("gleam", gleam, settings=qs, context=nothing), "consistency_et_era5land")
    assert skipped.expectation == "skipped" and skipped.severity == "info" and skipped.success


def test_consistency_takes_the_other_sources_stored_day(qs):
    """other_source_day returns one stored day (time length 1), as store.read_grid_day does."""
    era5 = grid_ds(qs, "era5land")
    days_asked = []

    def stored(src, day):
        days_asked.append((src, day))
        return grid_ds(qs, "gleam", days=(day.isoformat(),)) if src == "gleam" else None

    o = outcome(validate("era5land", era5, settings=qs, context=ValidationContext(today=TODAY, other_source_day=stored)),
                "consistency_et_gleam")
    assert o.success and o.expectation == "expect_column_values_to_be_between"
    assert ("gleam", date(2021, 7, 2)) in days_asked


# --------------------------------------------------------------------------- stations
def _move(sid, lat=None, lon=None, elevation=None, station_id=None):
    def edit(frame):
        pick = frame["station_id"] == sid
        for column, value in (("lat", lat), ("lon", lon), ("elevation_m", elevation), ("station_id", station_id)):
            if value is not None:
                frame.loc[pick, column] = value
        return frame
    return edit


def test_station_outside_the_area_is_a_warning(qs):
    result = validate("cma", station_ds(rows=_move("52855", lon=80.0)), settings=qs, context=CTX)
    assert result.accepted
    o = assert_fails(result, "station_lon_in_area", "warning")
    assert o.observed["unexpected_count"] == 30 and o.observed["unexpected_examples"][0] == 80.0
    assert o.observed["unexpected_where"][0] == "52855 2021-06-01"
    assert assert_fails(result, "station_location_matches_known", "warning").observed["unexpected_count"] == 30


def test_no_station_inside_the_region_is_critical(qs):
    result = validate("cma", station_ds(stations={"52866": (36.73, 100.2, 2295.0)}), settings=qs, context=CTX)
    o = assert_fails(result, "region_has_stations", "critical")
    assert o.observed["observed_value"] == 0
    assert not outcome(result, "stations_in_margin").success


def test_unknown_but_plausible_station_id_is_a_warning(qs):
    result = validate("cma", station_ds(rows=_move("52855", station_id="59999")), settings=qs, context=CTX)
    assert result.accepted
    o = assert_fails(result, "station_id_known", "warning")
    assert o.observed["unexpected_examples"][0] == "59999"
    ctx = ValidationContext(today=TODAY, known_station_ids=frozenset(STATIONS) | {"59999"})
    assert outcome(validate("cma", station_ds(rows=_move("52855", station_id="59999")), settings=qs, context=ctx),
                   "station_id_known").success


def test_implausible_station_id_is_critical(qs):
    result = validate("cma", station_ds(rows=_move("52855", station_id="5285X")), settings=qs, context=CTX)
    assert_fails(result, "station_id_plausible", "critical")


def test_surviving_special_code_is_critical(qs):
    ds = station_ds()
    set_values(ds, "pan_evaporation_large", [4], 32766.0)            # the CMA "missing" code as a number
    result = validate("cma", ds, settings=qs, context=CTX)
    assert not result.accepted
    o = assert_fails(result, "special_code_surviving_pan_evaporation_large", "critical")
    assert o.observed["unexpected_examples"] == [32766.0]
    assert_fails(result, "pan_evaporation_large_range", "critical")
    assert outcome(result, "special_code_surviving_et").success


def test_decoded_special_codes_are_info(qs):
    ds = station_ds()
    set_values(ds, "special_code", [0, 1], 32744)
    set_values(ds, "pan_evaporation_large", [0, 1], np.nan)
    result = validate("cma", ds, settings=qs, context=CTX)
    assert result.accepted
    o = outcome(result, "special_codes_decoded")
    assert o.severity == "info" and not o.success and o.observed["unexpected_count"] == 2


def test_undecoded_estimated_elevation_is_critical(qs):
    result = validate("cma", station_ds(rows=_move("52866", elevation=12295.2)), settings=qs, context=CTX)
    assert_fails(result, "elevation_impossible", "critical")
    assert_fails(result, "elevation_plausible", "warning")


def test_duplicate_station_days_are_critical(qs):
    ds = station_ds()
    ds = ds.assign_coords(time=("obs", np.where(np.arange(ds.sizes["obs"]) == 1, ds["time"].values[0], ds["time"].values)))
    o = assert_fails(validate("cma", ds, settings=qs, context=CTX), "duplicate_station_days", "critical")
    assert o.observed["unexpected_count"] == 2


def test_missing_station_days_are_warnings(qs):
    ds = station_ds(rows=lambda f: f[~((f["station_id"] == "52862") & (f["time"].dt.day > 10))])
    ds["et"].values[::2] = np.nan
    result = validate("cma", ds, settings=qs, file=Path("SURF_CLI_CHN_MUL_DAY-EVP-13240-202106.TXT"), context=CTX)
    assert result.accepted
    present = assert_fails(result, "station_days_present", "warning")
    assert present.observed["unexpected_where"] == ["52862"] and present.observed["unexpected_examples"] == [10 / 30]
    assert assert_fails(result, "station_et_missing", "warning").observed["unexpected_percent"] == pytest.approx(50, abs=2)


def test_station_et_in_metres_is_critical(qs):
    ds = station_ds("stations")
    ds["et"] = ds["et"] / 1000.0
    assert_fails(validate("stations", ds, settings=qs, context=CTX), "et_units_look_metres", "critical")


def test_station_future_dates(qs):
    result = validate("stations", station_ds("stations", month="2021-07"), settings=qs,
                      context=ValidationContext(today=date(2021, 7, 20)))
    o = assert_fails(result, "future_dates", "critical")
    assert o.observed["unexpected_count"] == 3 * 10                   # 22nd..31st for three stations


# --------------------------------------------------------------------------- the small world's files
def test_small_world_files_are_accepted(small_world, small_settings):
    qs = small_settings.model_copy(update={"quality": small_settings.quality.model_copy(update={"write_reports": False})})
    landing = small_world / "landing"
    ids = json.loads((small_world / "manifest.json").read_text())["stations"]
    ctx = ValidationContext(today=TODAY, known_station_ids=frozenset(ids) | {f"LYS-{i}" for i in ids} | {"CN-HaM"})
    expected_warnings = {"era5land": set(), "gleam": set(), "modis": set(),
                         "cma": {"station_days_present"},          # the world starts on 10 June
                         "stations": set()}
    for source, pattern in (("era5land", "era5land_202106.nc"), ("gleam", "E_2021_*.nc"),
                            ("modis", "MOD11A1.A2021170.*.tif"), ("cma", "*-202106.TXT"), ("stations", "*.csv")):
        path = sorted((landing / source).glob(pattern))[0]
        result = validate(source, read_source(source, path, settings=qs), settings=qs, file=path, context=ctx)
        assert result.accepted, (source, result.to_json()["critical_failures"])
        assert {o.check for o in result.warnings} == expected_warnings[source], source


# --------------------------------------------------------------------------- runtime
def test_ge_context_is_cached_and_releases_batches(qs):
    from etfuse.quality.validate import gx_runtime

    ds = grid_ds(qs, "gleam")
    validate("gleam", ds, settings=qs, context=CTX)
    runtime = gx_runtime()
    n = len(runtime._checkpoints)
    validate("gleam", ds, settings=qs, context=CTX)
    assert gx_runtime() is runtime
    assert len(runtime._checkpoints) == n                            # same suites: no new checkpoint
    assert runtime.context.validation_results_store.list_keys() == []
    assert runtime.datasource.get_execution_engine().batch_manager.batch_data_cache == {}


def test_result_json_and_properties(qs):
    ds = grid_ds(qs, "modis")
    ds["lst"] = ds["lst"] - 273.15
    result = validate("modis", ds, settings=qs, file=Path("MOD11A1.A2021182.h25v05.061.hdf"), context=CTX)
    data = json.loads(json.dumps(result.to_json()))
    assert data["accepted"] is False and data["file"] == "MOD11A1.A2021182.h25v05.061.hdf"
    assert {c["check"] for c in data["critical_failures"]} >= {"lst_range", "lst_units_look_celsius"}
    assert "quarantined" in data["summary"] and data["days"] == ["2021-07-01", "2021-07-02"]
    assert all(o.severity == "critical" and not o.success for o in result.critical_failures)
    assert result.seconds > 0 and result.report_path is None


def test_unknown_source_is_refused(qs):
    with pytest.raises(UnknownNameError, match="era5land"):
        validate("nosuch", grid_ds(qs, "gleam"), settings=qs, context=CTX)


def test_unreadable_other_source_day_does_not_stop_validation(qs):
    def broken(src, day):
        raise OSError("NetCDF: HDF error")

    ctx = ValidationContext(today=TODAY, other_source_day=broken)
    result = validate("gleam", grid_ds(qs, "gleam"), settings=qs, context=ctx)
    assert result.accepted
    skipped = outcome(result, "consistency_et_era5land")
    assert skipped.expectation == "skipped" and "no era5land et" in skipped.observed["skipped"]


def test_checkpoint_cache_is_bounded(qs, monkeypatch):
    from etfuse.quality.validate import gx_runtime

    runtime = gx_runtime()
    monkeypatch.setattr(runtime, "MAX_CHECKPOINTS", 2)
    for k in range(3):                                   # three "todays": three different days-suites
        validate("gleam", grid_ds(qs, "gleam"), settings=qs, context=ValidationContext(today=date(2021, 8, 1 + k)))
    assert len(runtime._checkpoints) == 2
    names = {s.name for s in runtime.context.suites.all()}
    assert set(runtime._checkpoints) <= names and len(names) == 2
