"""The product store: file format (CF/ACDD), atomic and idempotent writes, yearly files, reads,
reconcile, and a writer killed with SIGKILL at many moments."""

from __future__ import annotations

import hashlib
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from etfuse.grid import TargetGrid
from serving.cf_product import FILL_VALUE
from serving.product import DAILY_CHUNKS, YEARLY_CHUNKS, DayNotFoundError, ProductError, ProductStore
from tests.serving.product_selftest import selftest_field, selftest_fingerprint

REPO = Path(__file__).resolve().parents[2]
DAY = pd.Timestamp("2021-07-15")
#: least_significant_digit = 2 keeps 7 bits after the point (netCDF4-python): error <= 1/256 mm
PRECISION = 2.0 ** -8 + 1e-6


def fp(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def field(shape, seed: int, nan_corner: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = shape
    y = np.linspace(0, 1, rows)[:, None]
    x = np.linspace(0, 1, cols)[None, :]
    out = (3 + 2.5 * np.sin(5 * x + seed) * np.cos(3 * y) + rng.normal(0, 0.2, shape)).clip(0, None)
    out = out.astype(np.float32)
    if nan_corner:
        out[:3, :4] = np.nan
    return out


@pytest.fixture
def quiet_settings(settings):
    """The test region (200 x 200 cells) without quicklooks (test_quicklook.py draws them)."""
    return settings.model_copy(update={"serving": settings.serving.model_copy(update={"quicklooks": False})})


@pytest.fixture
def store(quiet_settings) -> ProductStore:
    return ProductStore(quiet_settings)


def write(store: ProductStore, day, values, *, key: str = "a", model: int = 1, status: str = "final",
          sources=("era5land", "gleam", "modis"), **kw) -> str:
    return store.write_day(day, values, model_version=model, status=status, sources_used=set(sources),
                           fingerprint=fp(key), **kw)


# ---------------------------------------------------------------------------------------------
# file format
def test_round_trip_values_fill_and_precision(store):
    values = field(store.grid.shape, 1)
    values[50, 60] = 0.0
    values[51, 60] = 5.999
    assert write(store, DAY, values) == "written"
    ds = store.read_day(DAY)
    et = ds["et"].values[0]
    assert et.dtype == np.float32 and et.shape == (200, 200)
    assert np.array_equal(np.isnan(et), np.isnan(values))
    ok = ~np.isnan(values)
    assert np.max(np.abs(et[ok] - values[ok])) <= PRECISION
    assert et[50, 60] == 0.0
    with netCDF4.Dataset(store.day_path(DAY)) as nc:         # missing cells hold the numeric fill value
        nc.set_auto_mask(False)
        raw = nc["et"][0]
        assert raw[0, 0] == FILL_VALUE == np.float32(-9999.0)
        assert np.all(raw[ok] > -1)
    assert store.read_day("2021-07-16") is None


def test_cf_and_acdd_attributes_of_a_day_file(store, quiet_settings):
    write(store, DAY, field(store.grid.shape, 2), key="attrs", model=7, status="provisional",
          sources=("era5land", "modis"))
    region = quiet_settings.region
    with netCDF4.Dataset(store.day_path(DAY)) as nc:
        g = {k: nc.getncattr(k) for k in nc.ncattrs()}
        assert g["Conventions"] == "CF-1.11, ACDD-1.3"
        for key in ("title", "summary", "keywords", "keywords_vocabulary", "institution", "source", "history",
                    "creator_name", "license", "references", "naming_authority"):
            assert isinstance(g[key], str) and g[key].strip(), key
        assert "evapotranspiration" in g["title"] and "2021-07-15" in g["title"]
        assert "GCN-GRU" in g["summary"] and "GLEAM" in g["summary"]
        assert "EVAPOTRANSPIRATION" in g["keywords"] and "GCMD" in g["keywords_vocabulary"]
        assert g["id"] == "etfuse_et_2021-07-15"
        assert "model v7" in g["history"] and "write_day" in g["history"]
        assert "7" in g["source"] and "GLEAM" in g["source"]
        assert "GCN-GRU" in g["references"] and "Qinghai" in g["references"]
        assert "pan" in g["comment"] and "coefficient" in g["comment"]
        for key in ("date_created", "date_modified"):
            assert datetime.strptime(g[key], "%Y-%m-%dT%H:%M:%SZ")
        assert g["product_version"] == "1.0"
        assert g["geospatial_lat_min"] == region.lat_min and g["geospatial_lat_max"] == region.lat_max
        assert g["geospatial_lon_min"] == region.lon_min and g["geospatial_lon_max"] == region.lon_max
        assert g["geospatial_lat_units"] == "degrees_north" and g["geospatial_lon_units"] == "degrees_east"
        assert g["geospatial_lat_resolution"] == "0.01 degree" == g["geospatial_lon_resolution"]
        assert g["time_coverage_start"] == "2021-07-15T00:00:00Z"
        assert g["time_coverage_end"] == "2021-07-16T00:00:00Z"
        assert g["time_coverage_duration"] == "P1D" and g["time_coverage_resolution"] == "P1D"
        assert g["model_versions"] == "7"

        et = nc["et"]
        assert et.dimensions == ("time", "lat", "lon") and et.dtype == np.float32
        assert et.standard_name == "water_evapotranspiration_amount"
        assert et.units == "kg m-2" and et.cell_methods == "time: sum" and et.grid_mapping == "crs"
        assert "evapotranspiration" in et.long_name
        assert et._FillValue == np.float32(-9999.0) and et.missing_value == np.float32(-9999.0)
        assert et.least_significant_digit == 2
        assert set(et.ancillary_variables.split()) == {"product_status", "sources_used", "model_version",
                                                       "input_fingerprint"}
        filters = et.filters()
        assert filters["zlib"] and filters["complevel"] == 4 and filters["shuffle"]
        assert et.chunking() == list(DAILY_CHUNKS)

        t = nc["time"]
        assert t.standard_name == "time" and t.units == "days since 1970-01-01 00:00:00"
        assert t.calendar == "standard" and t.axis == "T" and t.bounds == "time_bnds"
        day_number = (DAY - pd.Timestamp("1970-01-01")).days
        assert t[:].tolist() == [day_number]
        assert nc["time_bnds"][:].tolist() == [[day_number, day_number + 1]]

        lat, lon = nc["lat"], nc["lon"]
        assert (lat.standard_name, lat.units, lat.axis, lat.bounds) == ("latitude", "degrees_north", "Y", "lat_bnds")
        assert (lon.standard_name, lon.units, lon.axis, lon.bounds) == ("longitude", "degrees_east", "X", "lon_bnds")
        lat_v, lon_v = lat[:], lon[:]
        assert np.all(np.diff(lat_v) < 0) and np.all(np.diff(lon_v) > 0)        # north to south, west to east
        assert lat_v[0] == pytest.approx(region.lat_max - 0.005) and lon_v[0] == pytest.approx(region.lon_min + 0.005)
        lat_b, lon_b = nc["lat_bnds"][:], nc["lon_bnds"][:]
        assert lat_b[0, 0] == pytest.approx(region.lat_max) and lat_b[-1, 1] == pytest.approx(region.lat_min)
        assert np.array_equal(lat_b[1:, 0], lat_b[:-1, 1]) and np.array_equal(lon_b[1:, 0], lon_b[:-1, 1])
        assert np.all((lat_b[:, 0] > lat_v) & (lat_v > lat_b[:, 1]))
        assert np.all((lon_b[:, 0] < lon_v) & (lon_v < lon_b[:, 1]))

        crs = nc["crs"]
        assert crs.grid_mapping_name == "latitude_longitude"
        assert crs.semi_major_axis == 6378137.0 and crs.inverse_flattening == 298.257223563
        assert crs.longitude_of_prime_meridian == 0.0
        assert "WGS 84" in crs.crs_wkt and 'ID["EPSG",4326]' in crs.crs_wkt

        mv, st, su, fpv = nc["model_version"], nc["product_status"], nc["sources_used"], nc["input_fingerprint"]
        assert mv.dtype == np.int32 and mv.dimensions == ("time",) and mv[:].tolist() == [7]
        assert st.dtype == np.int8 and st.dimensions == ("time",)
        assert st.flag_values.tolist() == [1, 2] and st.flag_meanings == "provisional final"
        assert st.flag_values.dtype == np.int8 and st[:].tolist() == [1]
        assert su.dtype == np.int8 and su.flag_masks.tolist() == [1, 2, 4] and su.flag_masks.dtype == np.int8
        assert su.flag_meanings == "gleam era5land modis"
        assert su[:].tolist() == [2 | 4]
        assert fpv.dimensions[0] == "time" and list(fpv[:]) == [fp("attrs")]


def test_xarray_decodes_the_day(store):
    write(store, DAY, field(store.grid.shape, 3), key="x", status="provisional", sources=("era5land",))
    with xr.open_dataset(store.day_path(DAY)) as ds:
        assert pd.Timestamp(ds["time"].values[0]) == DAY
        assert pd.Timestamp(ds["time_bnds"].values[0, 0]) == DAY
        assert pd.Timestamp(ds["time_bnds"].values[0, 1]) == DAY + pd.Timedelta(days=1)
        assert str(ds["input_fingerprint"].values[0]) == fp("x")
        assert int(ds["product_status"].values[0]) == 1 and int(ds["sources_used"].values[0]) == 2
        assert ds["et"].attrs["units"] == "kg m-2" and ds["et"].encoding["_FillValue"] == np.float32(-9999.0)


def test_compliance_checker_cf_1_11_when_installed(store):
    """The IOOS compliance checker (dev dependency) on a product day, run as its own process: loaded
    into the test process, its netCDF/HDF5 libraries aborted the interpreter at exit (double free)."""
    checker = shutil.which("compliance-checker", path=str(Path(sys.executable).parent))
    if checker is None:
        pytest.skip("compliance-checker is not installed (make install adds it)")
    write(store, DAY, field(store.grid.shape, 4))
    out = store.root / "cc.json"
    done = subprocess.run([checker, "--test", "cf:1.11", "--criteria", "strict", "--format", "json",
                           "--output", str(out), str(store.day_path(DAY))], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:], out.read_text() if out.exists() else "")


# ---------------------------------------------------------------------------------------------
# idempotent, replaced, provisional -> final
def test_same_fingerprint_and_model_is_unchanged(store):
    values = field(store.grid.shape, 5)
    assert write(store, DAY, values) == "written"
    path = store.day_path(DAY)
    before = (path.stat().st_mtime_ns, path.stat().st_ino, sha256_file(path))
    time.sleep(0.01)
    assert write(store, DAY, values + 1) == "unchanged"          # the key decides, not the values
    assert (path.stat().st_mtime_ns, path.stat().st_ino, sha256_file(path)) == before
    assert len(store.history(DAY)) == 1
    rec = store.record(DAY)
    assert rec.replaced_count == 0 and rec.file_sha256 == before[2] and rec.path == path


def test_different_fingerprint_or_model_replaces_the_day(store):
    a, b, c = (field(store.grid.shape, s) for s in (6, 7, 8))
    assert write(store, DAY, a, key="a", model=1) == "written"
    assert write(store, DAY, b, key="b", model=1) == "replaced"
    assert write(store, DAY, c, key="b", model=2) == "replaced"
    files = list(store.day_path(DAY).parent.glob("*.nc"))
    assert files == [store.day_path(DAY)]
    with netCDF4.Dataset(files[0]) as nc:
        assert nc.dimensions["time"].size == 1
        assert list(nc["input_fingerprint"][:]) == [fp("b")] and nc["model_version"][:].tolist() == [2]
    et = store.read_day(DAY)["et"].values[0]
    ok = ~np.isnan(c)
    assert np.max(np.abs(et[ok] - c[ok])) <= PRECISION
    assert store.days() == [DAY]
    rec = store.record(DAY)
    assert (rec.fingerprint, rec.model_version, rec.replaced_count) == (fp("b"), 2, 2)
    assert rec.file_sha256 == sha256_file(store.day_path(DAY))
    history = store.history(DAY)
    assert history["action"].tolist() == ["written", "replaced", "replaced"]
    assert history["previous_fingerprint"].tolist()[1:] == [fp("a"), fp("b")]
    assert history["previous_model_version"].tolist()[1:] == [1, 1]


def test_provisional_day_becomes_final(store):
    values = field(store.grid.shape, 9)
    assert write(store, DAY, values, key="no-gleam", status="provisional", sources=("era5land", "modis")) == "written"
    assert write(store, DAY + pd.Timedelta(days=1), values, key="other", status="provisional") == "written"
    assert store.provisional_days() == [DAY, DAY + pd.Timedelta(days=1)]
    # GLEAM arrives: new inputs, new fingerprint, final
    assert write(store, DAY, values * 0.9, key="with-gleam", status="final",
                 sources=("era5land", "gleam", "modis")) == "replaced"
    rec = store.record(DAY)
    assert rec.status == "final" and rec.sources_used == {"era5land", "gleam", "modis"}
    assert store.provisional_days() == [DAY + pd.Timedelta(days=1)]
    with netCDF4.Dataset(store.day_path(DAY)) as nc:
        assert nc["product_status"][:].tolist() == [2] and nc["sources_used"][:].tolist() == [7]
    last = store.history(DAY).iloc[-1]
    assert (last["action"], last["previous_status"], last["status"]) == ("replaced", "provisional", "final")


def test_same_key_with_other_status_is_replaced_and_downgrade_is_refused(store):
    values = field(store.grid.shape, 10)
    write(store, DAY, values, key="k", status="provisional")
    assert write(store, DAY, values, key="k", status="final") == "replaced"
    assert "status or sources changed" in store.history(DAY).iloc[-1]["detail"]
    with pytest.raises(ProductError, match="final"):
        write(store, DAY, values, key="k2", status="provisional")
    assert store.record(DAY).status == "final"
    assert write(store, DAY, values, key="k2", status="provisional", allow_downgrade=True) == "replaced"


@pytest.mark.parametrize("kwargs, message", [
    ({"status": "draft"}, "status"),
    ({"sources_used": {"gleam", "merra"}}, "unknown sources"),
    ({"fingerprint": "abc"}, "SHA-256"),
    ({"model_version": -1}, "model_version"),
])
def test_write_day_rejects_bad_arguments(store, kwargs, message):
    args = dict(model_version=1, status="final", sources_used={"gleam"}, fingerprint=fp("x"))
    args.update(kwargs)
    with pytest.raises(ProductError, match=message):
        store.write_day(DAY, field(store.grid.shape, 1), **args)
    with pytest.raises(ProductError, match="shape"):
        store.write_day(DAY, np.zeros((10, 10)), model_version=1, status="final", sources_used=set(),
                        fingerprint=fp("x"))
    with pytest.raises(ProductError, match="date"):
        store.write_day("2021-07-15 12:00", field(store.grid.shape, 1), model_version=1, status="final",
                        sources_used=set(), fingerprint=fp("x"))
    assert store.days() == []


# ---------------------------------------------------------------------------------------------
# yearly files
def _write_days(store, days, seed0=0, **kw):
    fields = {}
    for k, day in enumerate(days):
        fields[pd.Timestamp(day)] = field(store.grid.shape, seed0 + k)
        write(store, day, fields[pd.Timestamp(day)], key=f"{day}-{seed0}", model=1 + k % 2,
              status="final" if k % 3 else "provisional", **kw)
    return fields


def test_yearly_file_equals_the_daily_files(store):
    days = list(pd.date_range("2020-12-29", "2021-01-04")) + list(pd.date_range("2021-02-10", "2021-02-14"))
    _write_days(store, days)
    assert store.stale_years() == [2020, 2021]
    path = store.build_year(2021)
    assert path == store.year_path(2021) and store.stale_years() == [2020]
    assert store.build_year(2019) is None
    year_days = [d for d in days if d.year == 2021]
    with xr.open_dataset(path) as yearly:
        assert [pd.Timestamp(t) for t in yearly["time"].values] == year_days      # only stored days, no fill
        assert yearly["et"].encoding["chunksizes"] == YEARLY_CHUNKS
        assert yearly.attrs["time_coverage_start"] == "2021-01-01T00:00:00Z"
        assert yearly.attrs["time_coverage_end"] == "2021-02-15T00:00:00Z"
        assert yearly.attrs["id"] == "etfuse_et_2021" and yearly.attrs["model_versions"] == "1, 2"
        assert yearly.attrs["Conventions"] == "CF-1.11, ACDD-1.3"
        for k, day in enumerate(year_days):
            daily = store.read_day(day)
            np.testing.assert_array_equal(yearly["et"].values[k], daily["et"].values[0])
            for name in ("model_version", "product_status", "sources_used", "input_fingerprint", "time_bnds"):
                np.testing.assert_array_equal(yearly[name].values[k], daily[name].values[0], err_msg=name)
    store.build_year(2020)
    with xr.open_mfdataset(sorted(store.root.glob("etfuse_et_*.nc")), combine="by_coords", data_vars="minimal",
                           coords="minimal", compat="override") as both:
        assert both.sizes["time"] == len(days)
    # a replaced day makes the year stale; rebuilding picks it up, never duplicating it
    write(store, "2021-01-02", field(store.grid.shape, 99), key="new")
    assert store.stale_years() == [2021]
    store.build_year(2021)
    assert store.stale_years() == []
    with xr.open_dataset(store.year_path(2021)) as yearly:
        assert yearly.sizes["time"] == len(year_days)
        assert str(yearly["input_fingerprint"].sel(time="2021-01-02").values) == fp("new")
    assert store.history().query("action == 'year_built'").shape[0] == 3


# ---------------------------------------------------------------------------------------------
# reads
def test_read_point_and_area(store):
    days = list(pd.date_range("2021-03-01", "2021-03-12"))
    fields = _write_days(store, days, seed0=20)
    lat, lon = 36.2537, 101.1111                       # inside the cell centred at (36.255, 101.115)
    row, col = int((37.5 - lat) // 0.01), int((lon - 100.5) // 0.01)
    frame = store.read_point(lat, lon, "2021-03-03", "2021-03-10")
    assert list(frame.columns) == ["date", "et_mm", "status", "model_version", "et_q05_mm", "et_q95_mm"]
    assert frame[["et_q05_mm", "et_q95_mm"]].isna().all().all()       # days written without the 90 % interval
    assert frame["date"].tolist() == days[2:10]
    expected = np.array([fields[d][row, col] for d in days[2:10]])
    assert np.max(np.abs(frame["et_mm"].to_numpy() - expected)) <= PRECISION
    assert frame.attrs["cell_lat"] == pytest.approx(36.255) and frame.attrs["cell_lon"] == pytest.approx(101.115)
    assert frame.attrs["days_from_daily"] == 8 and frame.attrs["days_from_yearly"] == 0
    statuses = {r.day: (r.status, r.model_version) for r in store.records()}
    assert list(zip(frame["status"], frame["model_version"])) == [statuses[d] for d in days[2:10]]

    store.build_year(2021)
    again = store.read_point(lat, lon, "2021-03-03", "2021-03-10")
    assert again.attrs["days_from_yearly"] == 8
    pd.testing.assert_frame_equal(frame, again)
    # a day replaced after the build comes from its daily file (the yearly one is stale for it)
    new = field(store.grid.shape, 77)
    write(store, "2021-03-05", new, key="newer", model=5)
    latest = store.read_point(lat, lon, "2021-03-01", "2021-03-31")
    assert latest.attrs["days_from_yearly"] == 11 and latest.attrs["days_from_daily"] == 1
    changed = latest.set_index("date").loc[pd.Timestamp("2021-03-05")]
    assert abs(changed["et_mm"] - new[row, col]) <= PRECISION and changed["model_version"] == 5
    assert len(latest) == 12 and latest["date"].is_monotonic_increasing
    # the missing corner reads as NaN, outside the grid is an error, an empty range is empty
    assert store.read_point(37.499, 100.501, "2021-03-01", "2021-03-01")["et_mm"].isna().all()
    with pytest.raises(ProductError, match="outside"):
        store.read_point(30.0, 101.0, "2021-03-01", "2021-03-02")
    assert store.read_point(lat, lon, "2022-01-01", "2022-12-31").empty

    area = store.read_area((101.0, 36.0, 101.2, 36.3), "2021-03-04")
    rows, cols = store.area_window((101.0, 36.0, 101.2, 36.3))
    grid_lat, grid_lon = store.grid.lat[rows], store.grid.lon[cols]
    assert grid_lat.min() >= 36.0 and grid_lat.max() <= 36.3 and grid_lon.min() >= 101.0 and grid_lon.max() <= 101.2
    assert area.shape == (30, 20)
    assert np.max(np.abs(area - fields[pd.Timestamp("2021-03-04")][rows, cols])) <= PRECISION
    with pytest.raises(DayNotFoundError):
        store.read_area((101.0, 36.0, 101.2, 36.3), "2021-04-01")
    with pytest.raises(ProductError, match="no cell"):
        store.read_area((90.0, 30.0, 91.0, 31.0), "2021-03-04")
    with pytest.raises(ProductError, match="west < east"):
        store.read_area((101.2, 36.0, 101.0, 36.3), "2021-03-04")


def test_read_point_reads_a_long_series_from_the_yearly_file(quiet_settings):
    grid = TargetGrid(100.5, 100.9, 36.0, 36.3, 0.01)                    # 30 x 40 cells: quick days
    store = ProductStore(quiet_settings, grid=grid)
    days = pd.date_range("2021-01-01", periods=100)
    base = field(grid.shape, 1, nan_corner=False)
    for k, day in enumerate(days):
        store.write_day(day, base + k * 0.01, model_version=1, status="final", sources_used={"era5land"},
                        fingerprint=fp(str(day)))
    store.build_year(2021)
    frame = store.read_point(36.15, 100.75, "2021-01-01", "2021-12-31")
    assert len(frame) == 100 and frame.attrs["days_from_yearly"] == 100
    row, col = frame.attrs["row"], frame.attrs["col"]
    assert np.max(np.abs(frame["et_mm"].to_numpy() - (base[row, col] + np.arange(100) * 0.01))) <= PRECISION


def test_concurrent_reads_while_writing(store):
    _write_days(store, pd.date_range("2021-05-01", "2021-05-05"), seed0=40)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                store.read_point(36.4, 101.4, "2021-05-01", "2021-05-31")
                store.read_area((101.0, 36.0, 101.5, 36.5), "2021-05-02")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for k, day in enumerate(pd.date_range("2021-05-06", "2021-05-15")):
            write(store, day, field(store.grid.shape, k), key=f"c{k}")
        store.build_year(2021)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors


# ---------------------------------------------------------------------------------------------
# reconcile: the ledger follows the files
def test_reconcile_adds_updates_removes_and_moves_corrupt_files(quiet_settings):
    store = ProductStore(quiet_settings)
    days = pd.date_range("2021-06-01", "2021-06-04")
    _write_days(store, days, seed0=60)
    assert ProductStore(quiet_settings).last_reconcile.clean

    # 1. a file without a ledger row (e.g. the ledger was lost)
    with sqlite3.connect(store.root / "ledger.sqlite") as db:
        db.execute("DELETE FROM days WHERE day='2021-06-01'")
    # 2. a file that differs from its row: an older version put back (a crash after the rename)
    old_copy = store.root / "old.nc"
    shutil.copy2(store.day_path(days[1]), old_copy)
    old_fp = store.record(days[1]).fingerprint
    write(store, days[1], field(store.grid.shape, 5), key="newer")
    os.replace(old_copy, store.day_path(days[1]))
    # 3. a file that is gone, 4. a file that is not netCDF any more
    store.day_path(days[2]).unlink()
    store.day_path(days[3]).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    # 5. temporary files: of a dead writer (removed), of a live one (kept)
    folder = store.day_path(days[0]).parent
    from etfuse.tempfiles import temporary_name
    live = temporary_name(store.day_path(days[0]))
    live.write_bytes(b"partial")
    dead = Path(str(live).replace(f".{os.getpid()}.", ".999999999."))
    dead.write_bytes(b"partial")

    report = ProductStore(quiet_settings).last_reconcile
    assert [a[:10] for a in report.added] == ["2021-06-01"]
    assert [u[:10] for u in report.updated] == ["2021-06-02"]
    assert [r[:10] for r in report.removed] == ["2021-06-03"]
    assert [c[:10] for c in report.corrupt] == ["2021-06-04"]
    assert [Path(t).name for t in report.temp_removed] == [dead.name]
    assert live.exists() and not dead.exists()
    assert store.record(days[0]) is not None
    assert store.record(days[1]).fingerprint == old_fp
    assert store.record(days[1]).file_sha256 == sha256_file(store.day_path(days[1]))
    assert store.record(days[2]) is None and store.record(days[3]) is None
    assert not store.day_path(days[3]).exists() and len(list((store.root / "corrupt").iterdir())) == 1
    assert sorted(store.days()) == [days[0], days[1]]
    assert set(store.history()["action"]) >= {"reconciled", "reconciled_missing", "corrupt_moved"}
    assert sorted(p.name for p in folder.glob("etfuse_et_*")) == ["etfuse_et_2021-06-01.nc", "etfuse_et_2021-06-02.nc"]
    assert ProductStore(quiet_settings).last_reconcile.clean


# ---------------------------------------------------------------------------------------------
# a writer killed at any moment
KILL_REGION = {"name": "kill", "lon_min": 100.0, "lon_max": 106.0, "lat_min": 34.0, "lat_max": 38.0,
               "resolution_deg": 0.01}                                    # 400 x 600 cells
KILL_DAY = "2021-07-15"

CHILD = textwrap.dedent('''
    import os, signal, sys
    from etfuse.settings import load_settings
    from serving import product as P
    from tests.serving.product_selftest import selftest_field, selftest_fingerprint

    home, mode, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
    region = dict(name="kill", lon_min=100.0, lon_max=106.0, lat_min=34.0, lat_max=38.0, resolution_deg=0.01)
    store = P.ProductStore(load_settings(home=home, region=region, serving={"quicklooks": False}))

    def write(i):
        return store.write_day("2021-07-15", selftest_field(store.grid.shape, i), model_version=1 + i % 3,
                               status="final", sources_used={"era5land", "gleam"},
                               fingerprint=selftest_fingerprint(i))

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    write(first)
    if mode == "mid_write":            # header and coordinates written, ET not yet
        original = P.write_product_file
        P.write_product_file = lambda path, grid, prov, blocks, **kw: original(path, grid, prov, die, **kw)
    elif mode == "before_rename":
        P.os.replace = die
    elif mode == "after_rename":       # the new file is in place, the ledger not yet updated
        P.ProductStore._upsert = die
    write(first + 1)
    print("not killed", flush=True)
''')


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETFUSE_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _wait_for(proc: subprocess.Popen, prefix: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.startswith(prefix):
                return line
            if not line and proc.poll() is not None:
                break
    proc.kill()
    raise AssertionError(f"writer never printed {prefix!r}; stderr: {proc.stderr.read()}")


def _check_after_crash(settings, known: dict[str, int]) -> tuple[int | None, bool]:
    """The final file is absent or a complete version; reopening reconciles the ledger to it.

    Returns the stored version and whether the dead writer left a temporary file (killed mid-write).
    """
    grid = TargetGrid.from_region(settings.region)
    path = ProductStore(settings, reconcile=False).day_path(KILL_DAY)
    folder = path.parent
    assert sorted(p.name for p in folder.glob("etfuse_et_*")) in ([], [path.name])
    version = None
    if path.exists():
        with netCDF4.Dataset(path) as nc:                       # opens: a complete file
            fingerprint = str(nc["input_fingerprint"][0])
            assert fingerprint in known, "the stored file is neither the previous nor the new version"
            version = known[fingerprint]
            et = np.ma.filled(nc["et"][0].astype(np.float32), np.nan)
        expected = selftest_field(grid.shape, version)
        assert np.array_equal(np.isnan(et), np.isnan(expected))
        assert np.nanmax(np.abs(et - expected)) <= PRECISION      # every value of that version, none missing
    left_temp = bool(list(folder.glob(".*.tmp")))
    store = ProductStore(settings)                                  # reconcile on open
    assert not list(folder.glob(".*.tmp")), "temporary files of the dead writer remain"
    record = store.record(KILL_DAY)
    if version is None:
        assert record is None
    else:
        assert record is not None and record.fingerprint == selftest_fingerprint(version)
        assert record.file_sha256 == sha256_file(path)
        assert record.model_version == 1 + version % 3
    assert ProductStore(settings).last_reconcile.clean
    return version, left_temp


def test_writer_killed_at_chosen_moments_leaves_a_complete_file(tmp_path, monkeypatch):
    from etfuse.settings import load_settings
    for key in [k for k in os.environ if k.startswith("ETFUSE_")]:
        monkeypatch.delenv(key)
    known = {selftest_fingerprint(i): i for i in range(0, 100)}
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    for n, (mode, expected_version, ledger_lags) in enumerate(
            [("mid_write", 0, False), ("before_rename", 10, False), ("after_rename", 21, True)]):
        home = tmp_path / f"home_{mode}"
        settings = load_settings(home=home, region=KILL_REGION, serving={"quicklooks": False})
        first = 10 * n
        proc = subprocess.run([sys.executable, str(script), str(home), mode, str(first)], env=_child_env(),
                              capture_output=True, text=True, timeout=120, cwd=REPO)
        assert proc.returncode == -signal.SIGKILL, (mode, proc.returncode, proc.stdout, proc.stderr)
        folder = home / "product" / "daily" / "2021"
        if mode != "after_rename":
            assert list(folder.glob(".*.tmp")), f"{mode}: expected the dead writer's temporary file"
        with sqlite3.connect(home / "product" / "ledger.sqlite") as db:
            ledger_fp = db.execute("SELECT fingerprint FROM days").fetchone()[0]
        assert ledger_fp == selftest_fingerprint(first)                 # the ledger still has the first write
        version, _ = _check_after_crash(settings, known)
        assert version == expected_version, mode
        if ledger_lags:
            history = ProductStore(settings).history(KILL_DAY)
            assert history["action"].tolist()[-1] == "reconciled"


def test_writer_killed_at_random_moments_leaves_a_complete_file(tmp_path, monkeypatch):
    from etfuse.settings import load_settings
    for key in [k for k in os.environ if k.startswith("ETFUSE_")]:
        monkeypatch.delenv(key)
    home = tmp_path / "home"
    settings = load_settings(home=home, region=KILL_REGION, serving={"quicklooks": False})
    region_arg = "100.0,34.0,106.0,38.0,0.01"
    rng = np.random.default_rng(2026)
    known = {selftest_fingerprint(i): i for i in range(0, 10_000)}
    delays = [0.0, 0.002, 0.011, 0.023, 0.047] + list(rng.uniform(0.0, 0.25, size=3))
    versions, mid_write = [], 0
    for k, delay in enumerate(delays):
        start = 1000 * (k + 1)
        proc = subprocess.Popen([sys.executable, "-m", "tests.serving.product_selftest", "--selftest-write", str(home),
                                 "--region", region_arg, "--day", KILL_DAY, "--start", str(start),
                                 "--iterations", "900"],
                                env=_child_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            _wait_for(proc, "ready" if k == 0 else "wrote")
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        version, left_temp = _check_after_crash(settings, known)
        mid_write += left_temp
        if k > 0:
            assert version is not None and version >= start            # at least the first write of this run
        versions.append(version)
    assert len({v for v in versions if v is not None}) >= 3
    assert mid_write >= 1, "no kill landed inside a write"
