"""ERA5-Land: every delivery form gives the same daily fields; the daily rule is in docs/data-formats.md."""

from __future__ import annotations

import zipfile

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from etfuse.errors import NoOverlapError, SourceFormatError
from etfuse.sources import read_source
from etfuse.synth.writers_grids import write_era5land_cds_netcdf, write_era5land_grib, write_era5land_netcdf3

BBOX = (99.9, 35.9, 101.1, 37.1)


def hourly_world(start="2021-03-01", days=3, extra_step=True, era5t_from=None, seed=0) -> tuple[xr.Dataset, np.ndarray, np.ndarray]:
    """Hourly provider-unit fields with known daily truth.

    Returns (hourly, daily_et_mm[day], daily_skt_mean[day]) for the ``days`` days from ``start``;
    the first step (00 UTC of start) carries the total of the day before.
    """
    rng = np.random.default_rng(seed)
    lat = np.round(np.arange(37.0, 35.99, -0.1), 3)
    lon = np.round(np.arange(100.0, 101.01, 0.1), 3)
    first = pd.Timestamp(start)
    steps = pd.date_range(first, first + pd.Timedelta(hours=24 * days if extra_step else 24 * days - 1), freq="h")
    et = rng.uniform(0.2, 4.0, (days + 1, lat.size, lon.size))             # index 0 = the day before start
    rn = rng.uniform(2.0, 15.0, (days + 1, lat.size, lon.size))            # MJ m-2
    skt = 265 + 10 * rng.random((len(steps), lat.size, lon.size))
    share = np.linspace(1 / 24, 1.0, 24)
    e, ssr, str_ = [], [], []
    for t in steps:
        acc_day = (t - pd.Timedelta(hours=1)).floor("D")
        k = (acc_day - first).days + 1
        h = int((t - acc_day) / pd.Timedelta(hours=1)) - 1
        e.append(-et[k] * share[h] / 1000.0)
        ssr.append((rn[k] + 5.0) * share[h] * 1e6)
        str_.append(np.full((lat.size, lon.size), -5.0 * share[h] * 1e6))
    expver = np.where(steps >= pd.Timestamp(era5t_from), "0005", "0001") if era5t_from else np.full(len(steps), "0001")
    dims = ("valid_time", "latitude", "longitude")
    hourly = xr.Dataset({"e": (dims, np.array(e, np.float32)), "ssr": (dims, np.array(ssr, np.float32)),
                         "str": (dims, np.array(str_, np.float32)), "skt": (dims, skt.astype(np.float32))},
                        coords={"valid_time": steps, "latitude": lat, "longitude": lon, "expver": ("valid_time", expver)})
    skt_mean = np.stack([skt[24 * d:24 * d + 24].mean(0) for d in range(days)]) if len(steps) >= 24 * days else None
    return hourly, et, rn, skt_mean


@pytest.fixture
def world():
    return hourly_world()


WRITERS = {
    "cds": lambda p, h: write_era5land_cds_netcdf(p, h),
    "cds-zip": lambda p, h: write_era5land_cds_netcdf(p, h, zipped=True),
    "netcdf3": lambda p, h: write_era5land_netcdf3(p, h),
    "grib-mixed-editions": lambda p, h: write_era5land_grib(p, h, edition={"skt": 2, "ssr": 2}),
}


@pytest.mark.parametrize("form", sorted(WRITERS))
def test_every_delivery_form_gives_the_same_days(form, world, tmp_path, settings):
    hourly, et, rn, skt_mean = world
    path = tmp_path / ("data.grib" if "grib" in form else "data.nc")
    WRITERS[form](path, hourly)
    ds = read_source("era5land", path, settings=settings, bbox=BBOX)
    days = pd.DatetimeIndex(ds["time"].values)
    # The 00 UTC step of 2021-03-01 is the whole of 2021-02-28 (accumulations only).
    assert list(days) == list(pd.date_range("2021-02-28", "2021-03-03"))
    assert ds["has_et"].values.tolist() == [True] * 4
    assert ds["has_skt"].values.tolist() == [False, True, True, True]     # 28 Feb has no 24 hourly skt
    tol = 2e-4 if form == "netcdf3" else 1e-4                            # int16 packing
    np.testing.assert_allclose(ds["et"].values, et, atol=tol * 10)
    np.testing.assert_allclose(ds["net_radiation"].values, rn, rtol=1e-4, atol=tol * 10)
    np.testing.assert_allclose(ds["skt"].values[1:], skt_mean, atol=0.01)
    assert np.isnan(ds["skt"].values[0]).all()
    assert ds["et"].attrs["units"] == "kg m-2" and ds["et"].attrs["standard_name"] == "water_evapotranspiration_amount"
    assert ds["net_radiation"].attrs["units"] == "MJ m-2" and ds["skt"].attrs["units"] == "K"
    assert ds["lat"].values[0] > ds["lat"].values[-1]
    # the old layout names the stream only when a request mixed final and ERA5T data
    assert set(ds["era5_stream"].values) == ({"unknown"} if form == "netcdf3" else {"final"})


@pytest.mark.parametrize("form", ["cds", "netcdf3", "grib-mixed-editions"])
def test_era5t_days_are_flagged(form, tmp_path, settings):
    hourly, *_ = hourly_world(era5t_from="2021-03-02T01:00")
    path = tmp_path / ("x.grib" if "grib" in form else "x.nc")
    WRITERS[form](path, hourly)
    ds = read_source("era5land", path, settings=settings, bbox=BBOX)
    # day 2 (02 Mar) uses steps 02 Mar 01 UTC .. 03 Mar 00 UTC: ERA5T; 01 Mar's total is final
    assert ds["era5_stream"].values.tolist() == ["final", "final", "ERA5T", "ERA5T"]


def test_partial_days_are_not_invented(tmp_path, settings):
    hourly, *_ = hourly_world(extra_step=False)             # a plain monthly request: no 00 UTC after the end
    hourly = hourly.isel(valid_time=[i for i in range(hourly.sizes["valid_time"]) if i != 30])  # lose 06 UTC 2 Mar
    path = tmp_path / "p.nc"
    write_era5land_cds_netcdf(path, hourly)
    ds = read_source("era5land", path, settings=settings, bbox=BBOX)
    has = dict(zip(pd.DatetimeIndex(ds["time"].values).strftime("%m-%d"), ds["has_et"].values))
    assert has["03-03"] == np.False_            # its 00 UTC step of 4 Mar is not in the file
    has_skt = dict(zip(pd.DatetimeIndex(ds["time"].values).strftime("%m-%d"), ds["has_skt"].values))
    assert has_skt["03-02"] == np.False_ and has_skt["03-01"] == np.True_ and has_skt["03-03"] == np.True_
    assert np.isnan(ds["et"].sel(time="2021-03-03").values).all()


def test_two_files_complete_a_day_split_across_them(tmp_path, settings, world):
    hourly, et, _, skt_mean = world
    first = hourly.isel(valid_time=slice(0, 48))            # 1 Mar 00 .. 2 Mar 23
    second = hourly.isel(valid_time=slice(48, None))        # 3 Mar 00 .. 4 Mar 00
    write_era5land_cds_netcdf(tmp_path / "a.nc", first)
    write_era5land_cds_netcdf(tmp_path / "b.nc", second)
    ds = read_source("era5land", [tmp_path / "a.nc", tmp_path / "b.nc"], settings=settings, bbox=BBOX)
    assert ds["has_et"].values.all()
    np.testing.assert_allclose(ds["et"].sel(time="2021-03-02").values, et[2], atol=1e-3)


def test_zip_members_with_different_variables_are_merged(tmp_path, world, settings):
    hourly, *_ = world
    path = tmp_path / "download.nc"
    write_era5land_cds_netcdf(path, hourly, zipped=True)
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["data_stream-oper_stepType-accum.nc", "data_stream-oper_stepType-instant.nc"]
    ds = read_source("era5land", path, settings=settings, bbox=BBOX)
    assert {"et", "net_radiation", "skt"} <= set(ds.data_vars)


def test_bad_files_fail_with_file_and_reason(tmp_path, world, settings):
    hourly, *_ = world
    good = tmp_path / "good.nc"
    write_era5land_cds_netcdf(good, hourly)
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(SourceFormatError, match=r"truncated\.nc: cannot be read as NetCDF"):
        read_source("era5land", truncated, settings=settings, bbox=BBOX)
    empty = tmp_path / "empty.nc"
    empty.write_bytes(b"")
    with pytest.raises(SourceFormatError, match=r"empty\.nc: unrecognised file format.*an empty file"):
        read_source("era5land", empty, settings=settings, bbox=BBOX)
    html = tmp_path / "error.nc"
    html.write_text("<html>503 Service Unavailable</html>")
    with pytest.raises(SourceFormatError, match="expected NetCDF3, NetCDF4/HDF5, GRIB or a ZIP"):
        read_source("era5land", html, settings=settings, bbox=BBOX)
    grib = tmp_path / "g.grib"
    write_era5land_grib(grib, hourly.isel(valid_time=slice(0, 30)))
    cut = tmp_path / "cut.grib"
    cut.write_bytes(grib.read_bytes()[:-500])
    with pytest.raises(SourceFormatError, match=r"cut\.grib: cannot be read as GRIB"):
        read_source("era5land", cut, settings=settings, bbox=BBOX)
    empty_zip = tmp_path / "empty_zip.nc"
    zipfile.ZipFile(empty_zip, "w").close()
    with pytest.raises(SourceFormatError, match="ZIP archive is empty"):
        read_source("era5land", empty_zip, settings=settings, bbox=BBOX)


def test_units_are_checked_never_guessed(tmp_path, world, settings):
    hourly, *_ = world
    path = tmp_path / "mm.nc"
    write_era5land_cds_netcdf(path, hourly)
    with netCDF4.Dataset(path, "a") as nc:
        nc["e"].units = "mm"
    with pytest.raises(SourceFormatError, match=r"variable 'e': unexpected units; expected one of .*'m'.*found 'mm'"):
        read_source("era5land", path, settings=settings, bbox=BBOX)


def test_no_overlap_and_components_without_total(tmp_path, world, settings):
    hourly, *_ = world
    path = tmp_path / "x.nc"
    write_era5land_cds_netcdf(path, hourly)
    with pytest.raises(NoOverlapError, match=r"found lon 100\.\.101, lat 36\.\.37"):
        read_source("era5land", path, settings=settings, bbox=(10, 40, 11, 41))
    # a delivery of the swapped evaporation components without the total 'e'
    comps = hourly[["e"]].rename({"e": "evavt"})
    p2 = tmp_path / "comp.nc"
    from etfuse.synth import writers_grids
    writers_grids.ERA5LAND_ATTRS.setdefault("evavt", {"units": "m of water equivalent", "long_name": "Evaporation from vegetation transpiration",
                                                      "GRIB_paramId": 260267, "GRIB_stepType": "accum"})
    try:
        write_era5land_cds_netcdf(p2, comps)
    finally:
        writers_grids.ERA5LAND_ATTRS.pop("evavt")
    with pytest.raises(SourceFormatError, match="evabs/evaow/evavt are known to be swapped"):
        read_source("era5land", p2, settings=settings, bbox=BBOX)


# ----------------------------------------------------------------------------- real samples
REAL = "era5land/DiHydro_ERA5L_hourly_2020-01_{}"
SERBIA = (19.0, 43.0, 21.5, 45.0)


@pytest.mark.realdata
def test_real_new_cds_netcdf_daily_totals(realdata, settings):
    path = realdata / REAL.format("tp_newformat_data_0.nc")
    ds = read_source("era5land", path, settings=settings, bbox=SERBIA)
    # independent: raw netCDF4, no xarray decoding: day D = value at (D+1) 00 UTC in seconds since 1970
    with netCDF4.Dataset(path) as nc:
        seconds = nc["valid_time"][:].astype(np.int64)
        tp = nc["tp"][:].filled(np.nan)
        assert str(nc["expver"][0]) == "0001"
    for day in ["2019-12-31", "2020-01-01", "2020-01-15", "2020-01-30"]:
        t = int((pd.Timestamp(day) + pd.Timedelta(days=1) - pd.Timestamp("1970-01-01")).total_seconds())
        k = int(np.flatnonzero(seconds == t)[0])
        np.testing.assert_allclose(ds["precipitation"].sel(time=day).values, 1000.0 * tp[k], rtol=1e-6)
    # the file ends 31 Jan 23 UTC: 31 Jan is not complete, so it is not there
    assert pd.Timestamp(ds["time"].values[-1]) == pd.Timestamp("2020-01-30")
    assert ds.sizes["time"] == 31 and set(ds["era5_stream"].values) == {"final"}


@pytest.mark.realdata
def test_real_grib_mixed_editions_daily_totals_and_means(realdata, settings, tmp_path):
    import cfgrib
    path = realdata / REAL.format("Serbia_data.grib")
    ds = read_source("era5land", path, settings=settings, bbox=SERBIA)
    assert {"et", "precipitation", "t2m"} <= set(ds.data_vars)
    # independent: cfgrib's (time, step) cube; day D's total is time=D, step=24 h
    e = cfgrib.open_dataset(str(path), backend_kwargs={"filter_by_keys": {"shortName": "e"},
                                                       "indexpath": str(tmp_path / "{short_hash}.idx")})
    for day in ["2020-01-01", "2020-01-17", "2020-01-30"]:
        expected = -1000.0 * e["e"].sel(time=day, step=pd.Timedelta(hours=24)).values
        np.testing.assert_allclose(ds["et"].sel(time=day).values, expected, rtol=1e-5, atol=1e-6)
    t2m = cfgrib.open_dataset(str(path), backend_kwargs={"filter_by_keys": {"shortName": "2t"},
                                                         "indexpath": str(tmp_path / "{short_hash}.idx")})
    vt = pd.DatetimeIndex(t2m["valid_time"].values.ravel())
    values = t2m["t2m"].values.reshape(-1, *t2m["t2m"].shape[-2:])
    day = pd.Timestamp("2020-01-10")
    sel = (vt >= day) & (vt < day + pd.Timedelta(days=1))
    assert sel.sum() == 24
    np.testing.assert_allclose(ds["t2m"].sel(time=day).values, values[sel].mean(0), rtol=1e-6)
    # the GRIB2 snow cover sits in the same file and does not disturb anything
    assert "snowc" not in ds.data_vars


@pytest.mark.realdata
def test_real_old_netcdf3_monthly_means_are_refused_clearly(realdata, settings):
    path = realdata / "era5land/emf-creaf_ERA5L_monthly_Iberia_oldformat_download.nc"
    with pytest.raises(SourceFormatError, match=r"not hourly data; expected steps of 1 h .* found steps of 672 to 744 h"):
        read_source("era5land", path, settings=settings, bbox=(-10, 35, 5, 45))


@pytest.mark.realdata
def test_real_old_netcdf3_packing_is_decoded(realdata):
    """The hourly form decodes int16 packing with the file's own scale/offset (checked by hand)."""
    from etfuse.sources.era5land import hourly
    path = realdata / "era5land/emf-creaf_ERA5L_monthly_Iberia_oldformat_download.nc"
    ds = hourly(path)
    with netCDF4.Dataset(path) as nc:
        v = nc["t2m"]
        v.set_auto_maskandscale(False)
        raw = np.asarray(v[0])
        assert v._FillValue == -32767
        i, j = np.argwhere(raw != -32767)[len(np.argwhere(raw != -32767)) // 2]   # a land cell
        expected = raw[i, j] * v.scale_factor + v.add_offset
        assert (raw == -32767).any()                                              # sea cells exist
    decoded = ds["t2m"].isel(valid_time=0).values
    assert ds["lat"].values[0] > ds["lat"].values[-1]
    np.testing.assert_allclose(decoded[i, j], expected, rtol=1e-6)
    assert np.isnan(decoded[raw == -32767]).all()
