"""MODIS MOD11A1 reader: the real HDF4-EOS tile, synthetic tiles and GeoTIFFs, QC rules, errors."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from etfuse.errors import NoOverlapError, SourceFormatError
from etfuse.settings import Settings
from etfuse.sources import get_reader, read_source, reader_names
from etfuse.sources.modis import qc_mask, read_modis, read_tile, resample_tiles
from etfuse.synth.writers_modis import (mod11a1_name, sinusoidal_tile_latlon, write_mod11a1_geotiff,
                                        write_mod11a1_hdf)
from tests.conftest import realdata_dir

R = 6371007.181                      # MODIS sinusoidal sphere [m]
T = 2 * math.pi * R / 36             # tile size [m]
N = 1200
DAY = "2020-07-01"



REAL_TILE = realdata_dir() / "modis" / "MOD11A1.hdf"


def _settings(**modis) -> Settings:
    return Settings(region="test", modis=modis) if modis else Settings(region="test")


def _field(lat, lon):
    """A smooth LST field [K] over the Tibetan plateau."""
    return 260.0 + 0.5 * (lon - 90.0) - 0.8 * (lat - 30.0) + 2.0 * np.sin(np.deg2rad(lon) * 20)


def _tile(tmp: Path, h: int, v: int, *, day=DAY, value=None, qc=None, name=None, **kw) -> Path:
    lat, lon = sinusoidal_tile_latlon(h, v)
    lst = _field(lat, lon) if value is None else (value(lat, lon) if callable(value) else np.full((N, N), value))
    lst = np.where(np.isnan(lon), np.nan, lst)
    path = tmp / (name or mod11a1_name(day, h, v))
    return write_mod11a1_hdf(path, day=day, h=h, v=v, lst_k=lst, qc=qc, **kw)


@pytest.fixture(scope="module")
def qinghai_tiles(tmp_path_factory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("modis_tiles")
    return [_tile(tmp, h, 5) for h in (24, 25, 26)]


# --------------------------------------------------------------------------- registry
def test_registered_as_grid_reader():
    assert "modis" in reader_names()
    spec = get_reader("modis")
    assert spec.kind == "grid" and spec.read is read_modis


# --------------------------------------------------------------------------- the real tile
def _real_geometry(sd) -> tuple[float, float, float, float]:
    text = sd.attributes()["StructMetadata.0"]
    ul = re.search(r"UpperLeftPointMtrs=\(([-\d.]+),([-\d.]+)\)", text)
    lr = re.search(r"LowerRightMtrs=\(([-\d.]+),([-\d.]+)\)", text)
    return float(ul[1]), float(ul[2]), float(lr[1]), float(lr[2])


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_TILE.is_file(), reason=f"real MOD11A1 tile not available at {REAL_TILE} "
                    "(set ETFUSE_REALDATA to the realdata folder)")
def test_real_tile_matches_hand_computed_pixels():
    from pyhdf.SD import SD, SDC

    bbox = (-40.0, -9.0, -36.0, -4.0)          # north-east Brazil, inside tile h14v09
    settings = _settings()                     # defaults: accept 01 up to LST error flag 1
    ds = read_source("modis", REAL_TILE, settings=settings, bbox=bbox)

    assert ds.attrs["modis_format"] == "hdf4-eos" and ds.attrs["source"] == "modis"
    assert ds["lst"].dims == ("time", "lat", "lon") and ds["lst"].dtype == np.float32
    assert ds["time"].dtype == np.dtype("datetime64[ns]")
    assert list(pd.DatetimeIndex(ds["time"].values)) == [pd.Timestamp("2019-11-01")]
    lat, lon = ds["lat"].values, ds["lon"].values
    assert np.all(np.diff(lat) < 0) and np.all(np.diff(lon) > 0)
    assert ds.sizes["lat"] == 500 and ds.sizes["lon"] == 400          # 5 x 4 degrees at 0.01
    assert ds["lst"].attrs["units"] == "K"
    out = ds["lst"].values[0]
    finite = out[np.isfinite(out)]
    assert finite.size > 0.5 * out.size
    assert 270 < finite.min() and finite.max() < 340                 # a hot November noon in NE Brazil

    # independent geolocation: tile corners from the file, sinusoidal formulas written out here
    sd = SD(str(REAL_TILE), SDC.READ)
    try:
        ulx, uly, lrx, lry = _real_geometry(sd)
        raw = sd.select("LST_Day_1km").get()
        qc = sd.select("QC_Day").get()
    finally:
        sd.end()
    px, py = (lrx - ulx) / N, (uly - lry) / N
    la = np.deg2rad(lat)[:, None]
    lo = np.deg2rad(lon)[None, :]
    col = np.floor((R * lo * np.cos(la) - ulx) / px).astype(int)
    row = np.broadcast_to(np.floor((uly - R * la) / py).astype(int), col.shape)
    assert row.min() >= 0 and row.max() < N and col.min() >= 0 and col.max() < N
    r, q = raw[row, col], qc[row, col]
    accepted = ((q & 3) == 0) | (((q & 3) == 1) & ((q >> 6) <= 1))
    expected_nan = (r == 0) | ~accepted
    assert np.array_equal(np.isnan(out), expected_nan)
    assert np.isnan(out).mean() == pytest.approx(expected_nan.mean())
    np.testing.assert_allclose(out[~expected_nan], r[~expected_nan] * 0.02, rtol=0, atol=1e-4)

    # a few cells one by one, including ones rejected by QC
    rejected = np.argwhere(~accepted)[:3]
    kept = np.argwhere(~expected_nan)[::40000][:4]
    assert len(rejected) and len(kept)
    for i, j in [*map(tuple, rejected), *map(tuple, kept)]:
        y = R * math.radians(lat[i])
        x = R * math.radians(lon[j]) * math.cos(math.radians(lat[i]))
        pr, pc = int((uly - y) // py), int((x - ulx) // px)
        flag, mandatory = int(qc[pr, pc]) >> 6, int(qc[pr, pc]) & 3
        if raw[pr, pc] and (mandatory == 0 or (mandatory == 1 and flag <= 1)):
            assert out[i, j] == pytest.approx(raw[pr, pc] * 0.02, abs=1e-4)
        else:
            assert np.isnan(out[i, j])


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_TILE.is_file(), reason=f"real MOD11A1 tile not available at {REAL_TILE}")
def test_real_tile_error_flag_setting_changes_kept_pixels():
    """The real tile holds QC 145 (other quality, LST error flag 2): dropped by default, kept at 2."""
    bbox = (-40.0, -9.0, -36.0, -4.0)
    strict = read_source("modis", REAL_TILE, settings=_settings(accept_other_quality=False), bbox=bbox)["lst"]
    default = read_source("modis", REAL_TILE, settings=_settings(), bbox=bbox)["lst"]
    loose = read_source("modis", REAL_TILE, settings=_settings(max_lst_error_flag=3), bbox=bbox)["lst"]
    n = [int(x.notnull().sum()) for x in (strict, default, loose)]
    assert n[0] < n[1] < n[2]
    both = default.notnull() & loose.notnull()
    assert np.array_equal(default.values[both.values], loose.values[both.values])


# --------------------------------------------------------------------------- synthetic tiles
def test_seam_between_adjacent_tiles_has_no_gap(tmp_path):
    # h25v05 and h26v05 meet where x = 8 T, i.e. lon = 80 deg / cos(lat) (98.9 E at 36 N)
    a = _tile(tmp_path, 25, 5, value=300.0)
    b = _tile(tmp_path, 26, 5, value=310.0)
    bbox = (98.0, 35.5, 100.0, 36.5)
    out = read_modis([a, b], settings=_settings(), bbox=bbox)
    v = out["lst"].values[0]
    assert not np.isnan(v).any()
    la = np.deg2rad(out["lat"].values)[:, None]
    x = R * np.deg2rad(out["lon"].values)[None, :] * np.cos(la)
    seam = 8 * T
    clear = np.abs(x - seam) > 1.0
    assert np.all(v[clear & (x < seam)] == 300.0) and np.all(v[clear & (x > seam)] == 310.0)
    assert (x < seam).any() and (x > seam).any()

    # alone, each tile leaves the other side empty: the seam really is inside the box
    only_a = read_modis([a], settings=_settings(), bbox=bbox)["lst"].values[0]
    assert np.isnan(only_a[clear & (x > seam)]).all() and not np.isnan(only_a[clear & (x < seam)]).any()

    # a smooth field stays smooth across the seam
    c = _tile(tmp_path / "smooth", 25, 5)
    d = _tile(tmp_path / "smooth", 26, 5)
    smooth = read_modis([d, c], settings=_settings(), bbox=bbox)
    lat2, lon2 = np.meshgrid(smooth["lat"].values, smooth["lon"].values, indexing="ij")
    np.testing.assert_allclose(smooth["lst"].values[0], _field(lat2, lon2), atol=0.05)


def test_province_mosaic_from_three_tiles(qinghai_tiles):
    settings = Settings()                                     # the Qinghai region, 0.01 deg, 0.5 deg margin
    read_modis(qinghai_tiles, settings=settings)              # warm-up (imports, xarray backends)
    t0 = time.perf_counter()
    ds = read_modis(qinghai_tiles, settings=settings)
    elapsed = time.perf_counter() - t0
    assert ds.sizes["lat"] == 950 and ds.sizes["lon"] == 1490
    lat, lon = ds["lat"].values, ds["lon"].values
    # cell centres on the target lattice: lon_min + (k + 0.5) res, lat_max - (k + 0.5) res
    assert lon[0] == pytest.approx(89.5 - 0.5 + 0.005) and lat[0] == pytest.approx(39.87 + 0.5 - 0.005)
    k = (lon - 89.5) / 0.01 - 0.5
    assert np.allclose(k, np.round(k), atol=1e-6)
    v = ds["lst"].values[0]
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    south_of_v04 = lat2 < 40.0                                # v04 (north of 40 N) is not given
    assert not np.isnan(v[south_of_v04]).any()
    assert np.isnan(v[~south_of_v04]).all()
    np.testing.assert_allclose(v[south_of_v04], _field(lat2, lon2)[south_of_v04], atol=0.05)
    # the north-west corner of the province lies in h24v05
    corner = ds["lst"].sel(lat=39.5, lon=89.6, method="nearest").item()
    assert np.isfinite(corner)
    assert elapsed < 3.0, f"province-size mosaic took {elapsed:.2f} s"

    tiles = [read_tile(p, settings) for p in qinghai_tiles]
    t0 = time.perf_counter()
    resample_tiles(tiles, lat, lon)
    assert time.perf_counter() - t0 < 1.0


QC_BANDS = [0b00000000, 0b11000000, 0b00000001, 0b01000001, 0b10000001, 0b11000001, 0b00000010, 0b00000011]


def _expected_kept(code: int, accept_other: bool, max_flag: int) -> bool:
    mandatory, flag = code & 3, code >> 6
    return mandatory == 0 or (mandatory == 1 and accept_other and flag <= max_flag)


@pytest.fixture(scope="module")
def qc_tile(tmp_path_factory) -> Path:
    """h25v05 at 300 K everywhere, QC in 8 bands of 150 rows (1.25 deg of latitude each)."""
    qc = np.repeat(np.array(QC_BANDS, dtype=np.uint8), 150)[:, None] * np.ones((1, N), dtype=np.uint8)
    return _tile(tmp_path_factory.mktemp("qc"), 25, 5, value=300.0, qc=qc)


@pytest.mark.parametrize("accept_other, max_flag", [(True, 1), (False, 3), (True, 0), (True, 3), (True, 2)])
def test_qc_rules(qc_tile, accept_other, max_flag):
    settings = _settings(accept_other_quality=accept_other, max_lst_error_flag=max_flag, grid_resolution_deg=0.05)
    ds = read_modis([qc_tile], settings=settings, bbox=(80.0, 30.0, 105.0, 40.0))
    v = ds["lst"].values[0]
    lat2, lon2 = np.meshgrid(ds["lat"].values, ds["lon"].values, indexing="ij")
    band = np.floor((40.0 - lat2) / 1.25).astype(int)      # row = 1200 (40 - lat) / 10 on tile v05
    lon_eq = lon2 * np.cos(np.deg2rad(lat2))                # x / R in degrees; tile h25 spans 70..80
    inside = (lon_eq > 70.01) & (lon_eq < 79.99)
    outside = (lon_eq < 69.99) | (lon_eq > 80.01)
    for k, code in enumerate(QC_BANDS):
        cells = inside & (band == k) & (np.abs((40.0 - lat2) / 1.25 - np.round((40.0 - lat2) / 1.25)) > 0.01)
        assert cells.sum() > 100
        if _expected_kept(code, accept_other, max_flag):
            assert np.all(v[cells] == 300.0), f"QC {code:08b} should be kept"
        else:
            assert np.isnan(v[cells]).all(), f"QC {code:08b} should be rejected"
    assert outside.any() and np.isnan(v[outside]).all()


def test_qc_mask_every_byte():
    codes = np.arange(256, dtype=np.uint8)
    for accept_other in (True, False):
        for max_flag in range(4):
            got = qc_mask(codes, accept_other_quality=accept_other, max_lst_error_flag=max_flag)
            want = [_expected_kept(int(c), accept_other, max_flag) for c in codes]
            assert got.tolist() == want


def test_fill_and_valid_range(tmp_path):
    # 5 latitude bands of 240 rows (2 deg each): fill, below range, just below, lowest valid, highest valid
    values = np.array([0.0, 100.0, 149.98, 150.0, 1310.7])
    lst = np.repeat(values, 240)[:, None] * np.ones((1, N))
    path = tmp_path / mod11a1_name(DAY, 25, 5)
    write_mod11a1_hdf(path, day=DAY, h=25, v=5, lst_k=lst, qc=np.zeros((N, N), np.uint8))
    # 91.5-92 E lies in h25v05 at every latitude from 30 to 40 N
    ds = read_modis([path], settings=_settings(grid_resolution_deg=0.05), bbox=(91.5, 30.0, 92.0, 40.0))
    assert not np.isnan(ds["lst"].values[0][ds["lat"].values < 32.0]).any()
    v = ds["lst"].values[0]
    band = np.floor((40.0 - ds["lat"].values) / 2.0).astype(int)
    for k, expected in enumerate([np.nan, np.nan, np.nan, 150.0, 1310.7]):
        rows = v[band == k]
        if np.isnan(expected):
            assert np.isnan(rows).all(), f"band {k} ({values[k]} K) should be NaN"
        else:
            np.testing.assert_allclose(rows, expected, atol=1e-3)


@pytest.mark.parametrize("attrs, match", [
    ({"scale_factor": None}, "missing attribute 'scale_factor'"),
    ({"scale_factor": 0.01}, "unexpected scale_factor; expected 0.02, found 0.01"),
    ({"_FillValue": None}, "missing attribute '_FillValue'"),
    ({"_FillValue": 65535}, "unexpected _FillValue; expected 0, found 65535"),
    ({"valid_range": [7500, 60000]}, "unexpected valid_range"),
    ({"units": "degC"}, "unexpected units"),
])
def test_packing_attributes_are_checked(tmp_path, attrs, match):
    path = _tile(tmp_path, 25, 5, value=300.0, lst_attrs=attrs)
    with pytest.raises(SourceFormatError, match=re.escape(match)):
        read_modis([path], settings=_settings(), bbox=(92.0, 35.0, 93.0, 36.0))


def test_day_from_file_name_when_metadata_lacks_it(tmp_path):
    path = _tile(tmp_path, 25, 5, day="2020-05-02", core_metadata=False,
                 name="MOD11A1.A2020123.h25v05.061.2020124000000.hdf")
    ds = read_modis([path], settings=_settings(), bbox=(92.0, 35.0, 93.0, 36.0))
    assert pd.Timestamp(ds["time"].values[0]) == pd.Timestamp("2020-05-02")
    nameless = _tile(tmp_path, 25, 5, core_metadata=False, name="tile.hdf")
    with pytest.raises(SourceFormatError, match="cannot tell the day.*RANGEBEGINNINGDATE or A%Y%j"):
        read_modis([nameless], settings=_settings(), bbox=(92.0, 35.0, 93.0, 36.0))


def test_other_products_refused(tmp_path):
    eight_day = _tile(tmp_path, 25, 5, core_metadata=False, name="MOD11A2.A2020177.h25v05.061.2020186000000.hdf")
    with pytest.raises(SourceFormatError, match="not a MOD11A1 .*found MOD11A2.*8-day composite"):
        read_modis([eight_day], settings=_settings(), bbox=(92.0, 35.0, 93.0, 36.0))
    import rasterio

    lat, lon = _grid(101.0, 101.5, 36.0, 36.5)
    aqua = write_mod11a1_geotiff(tmp_path / "lst.tif", day=DAY, lat=lat, lon=lon,
                                 lst_k=np.full((lat.size, lon.size), 280.0))
    with rasterio.open(aqua, "r+") as dst:
        dst.update_tags(SHORTNAME="MYD11A1")
    with pytest.raises(SourceFormatError, match="found MYD11A1.*Aqua"):
        read_modis([aqua], settings=_settings())


def test_several_days_sorted_and_duplicates_refused(tmp_path):
    later = _tile(tmp_path, 25, 5, day="2020-07-02", value=301.0)
    earlier = _tile(tmp_path, 25, 5, day="2020-07-01", value=300.0)
    ds = read_modis([later, earlier], settings=_settings(), bbox=(92.0, 35.0, 93.0, 36.0))
    assert list(pd.DatetimeIndex(ds["time"].values)) == [pd.Timestamp("2020-07-01"), pd.Timestamp("2020-07-02")]
    assert ds["time"].dtype == np.dtype("datetime64[ns]")
    assert float(ds["lst"].isel(time=0).mean()) == 300.0 and float(ds["lst"].isel(time=1).mean()) == 301.0
    again = _tile(tmp_path / "copy", 25, 5, day="2020-07-01", value=300.0)
    with pytest.raises(SourceFormatError, match="the same tile and day is given twice"):
        read_modis([earlier, again], settings=_settings(), bbox=(92.0, 35.0, 93.0, 36.0))


def test_tile_position_comes_from_struct_metadata(tmp_path):
    """A tile written as h26v05 but named h25v05 lands where its metadata says."""
    path = _tile(tmp_path, 26, 5, value=300.0, name=mod11a1_name(DAY, 25, 5))
    ds = read_modis([path], settings=_settings(), bbox=(100.0, 35.0, 101.0, 36.0))   # inside h26v05
    assert not ds["lst"].isnull().any()
    with pytest.raises(NoOverlapError):
        read_modis([path], settings=_settings(), bbox=(92.0, 35.0, 93.0, 36.0))     # inside h25v05


def test_no_overlap_hdf(tmp_path):
    path = _tile(tmp_path, 25, 5, value=300.0)
    bbox = (99.5, 35.0, 100.5, 36.0)                          # east of h25v05 (it ends at 97.7-98.9 E there)
    with pytest.raises(NoOverlapError, match="does not overlap the region.*h25v05"):
        read_modis([path], settings=_settings(), bbox=bbox)
    # one tile outside the box is fine when another tile of the day covers it
    other = _tile(tmp_path, 26, 5, value=310.0)
    ds = read_modis([path, other], settings=_settings(), bbox=bbox)
    assert not ds["lst"].isnull().any() and float(ds["lst"].mean()) == 310.0


# --------------------------------------------------------------------------- GeoTIFF
def _grid(west=100.0, east=103.5, south=35.0, north=38.0, res=0.01):
    lat = north - (np.arange(round((north - south) / res)) + 0.5) * res
    lon = west + (np.arange(round((east - west) / res)) + 0.5) * res
    return lat, lon


def test_geotiff_round_trip(tmp_path):
    lat, lon = _grid()
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    lst = _field(lat2, lon2)
    cloud = (np.abs(lat2 - 36.5) < 0.2) & (np.abs(lon2 - 101.5) < 0.3)
    lst[cloud] = np.nan
    path = write_mod11a1_geotiff(tmp_path / "lst.tif", day=DAY, lat=lat, lon=lon, lst_k=lst)
    settings = _settings()
    ds = read_modis([path], settings=settings)
    assert ds.attrs["modis_format"] == "geotiff" and "modis_qc_missing" not in ds.attrs
    assert list(pd.DatetimeIndex(ds["time"].values)) == [pd.Timestamp(DAY)]
    # clipped to the test region (100.5-102.5 E, 35.5-37.5 N) plus its 0.5 deg margin
    out_lat, out_lon = ds["lat"].values, ds["lon"].values
    assert out_lon.min() > 100.0 - 1e-9 and out_lon.max() < 103.0 + 0.01
    assert out_lat.min() > 35.0 - 1e-9 and out_lat.max() < 38.0
    assert np.all(np.diff(out_lat) < 0) and np.all(np.diff(out_lon) > 0)
    i = np.searchsorted(-lat, -out_lat)
    j = np.searchsorted(lon, out_lon - 1e-9)
    np.testing.assert_allclose(lat[i], out_lat, atol=1e-9)
    np.testing.assert_allclose(lon[j], out_lon, atol=1e-9)
    got = ds["lst"].values[0]
    want = lst[np.ix_(i, j)]
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.isnan(got).any()
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], atol=0.02)


def test_geotiff_qc_band_and_day_from_name(tmp_path):
    lat, lon = _grid(101.0, 101.5, 36.0, 36.5)
    lst = np.full((lat.size, lon.size), 290.0)
    qc = np.zeros(lst.shape, np.uint8)
    qc[:10] = 0b10000001                    # other quality, LST error flag 2
    path = write_mod11a1_geotiff(tmp_path / "MOD11A1.061_LST_Day_1km_doy2020183_aid0001.tif", day=DAY,
                                 lat=lat, lon=lon, lst_k=lst, qc=qc, day_tag=False)
    ds = read_modis([path], settings=_settings())
    assert pd.Timestamp(ds["time"].values[0]) == pd.Timestamp("2020-07-01")
    v = ds["lst"].values[0]
    assert np.isnan(v[:10]).all() and np.all(v[10:] == pytest.approx(290.0))
    loose = read_modis([path], settings=_settings(max_lst_error_flag=2))["lst"].values[0]
    assert not np.isnan(loose).any()


def test_geotiff_mosaic_and_days(tmp_path):
    west_lat, west_lon = _grid(100.5, 101.5, 36.0, 37.0)
    east_lat, east_lon = _grid(101.5, 102.5, 36.0, 37.0)
    a = write_mod11a1_geotiff(tmp_path / "a.tif", day=DAY, lat=west_lat, lon=west_lon,
                              lst_k=np.full((100, 100), 280.0))
    b = write_mod11a1_geotiff(tmp_path / "b.tif", day=DAY, lat=east_lat, lon=east_lon,
                              lst_k=np.full((100, 100), 290.0))
    c = write_mod11a1_geotiff(tmp_path / "c.tif", day="2020-06-30", lat=west_lat, lon=west_lon,
                              lst_k=np.full((100, 100), 270.0))
    ds = read_modis([b, c, a], settings=_settings())
    assert list(pd.DatetimeIndex(ds["time"].values)) == [pd.Timestamp("2020-06-30"), pd.Timestamp(DAY)]
    assert ds.sizes["lon"] == 200 and ds.sizes["lat"] == 100
    day = ds["lst"].sel(time=DAY).values
    assert np.all(day[:, :100] == 280.0) and np.all(day[:, 100:] == 290.0)
    first = ds["lst"].sel(time="2020-06-30").values
    assert np.all(first[:, :100] == 270.0) and np.isnan(first[:, 100:]).all()


def test_geotiff_mixed_resolution_refused(tmp_path):
    lat1, lon1 = _grid(100.5, 101.5, 36.0, 37.0, res=0.01)
    lat2, lon2 = _grid(100.5, 101.5, 36.0, 37.0, res=0.02)
    a = write_mod11a1_geotiff(tmp_path / "a.tif", day=DAY, lat=lat1, lon=lon1, lst_k=np.full((100, 100), 280.0))
    b = write_mod11a1_geotiff(tmp_path / "b.tif", day="2020-07-02", lat=lat2, lon=lon2,
                              lst_k=np.full((50, 50), 280.0))
    with pytest.raises(SourceFormatError, match="grid resolution differs.*expected 0.01 x 0.01 deg.*found 0.02 x 0.02"):
        read_modis([a, b], settings=_settings())


def test_geotiff_wrong_crs(tmp_path):
    lat, lon = _grid(101.0, 101.5, 36.0, 36.5)
    path = write_mod11a1_geotiff(tmp_path / "lst.tif", day=DAY, lat=lat, lon=lon,
                                 lst_k=np.full((lat.size, lon.size), 280.0), crs="EPSG:3857")
    with pytest.raises(SourceFormatError, match="not in WGS84 lat/lon; expected EPSG:4326, found EPSG:3857"):
        read_modis([path], settings=_settings())


def test_geotiff_rotated_and_float_bands(tmp_path):
    import rasterio
    from rasterio.transform import Affine

    profile = dict(driver="GTiff", width=20, height=20, count=1, dtype="float32", crs="EPSG:4326")
    rotated = tmp_path / "MOD11A1.A2020183.rot.tif"
    with rasterio.open(rotated, "w", transform=Affine(0.01, 0.001, 101.0, 0.001, -0.01, 36.5), **profile) as dst:
        dst.write(np.full((1, 20, 20), 280.0, np.float32))
    with pytest.raises(SourceFormatError, match="rotated or sheared geotransform"):
        read_modis([rotated], settings=_settings())

    north_up = Affine(0.01, 0.0, 101.0, 0.0, -0.01, 36.5)
    no_units = tmp_path / "MOD11A1.A2020183.nounits.tif"
    with rasterio.open(no_units, "w", transform=north_up, **profile) as dst:
        dst.write(np.full((1, 20, 20), 280.0, np.float32))
    with pytest.raises(SourceFormatError, match="floating-point LST band must state its units"):
        read_modis([no_units], settings=_settings())

    kelvin = tmp_path / "MOD11A1.A2020183.kelvin.tif"
    data = np.full((1, 20, 20), 280.5, np.float32)
    data[0, 0, 0] = np.nan
    with rasterio.open(kelvin, "w", transform=north_up, **profile) as dst:
        dst.write(data)
        dst.units = ("K",)
    ds = read_modis([kelvin], settings=_settings())
    v = ds["lst"].values[0]
    assert np.isnan(v[0, 0]) and np.all(v.ravel()[1:] == 280.5)
    assert "kelvin.tif" in ds.attrs["modis_qc_missing"]                  # no QC band: said so

    unscaled = tmp_path / "MOD11A1.A2020183.unscaled.tif"
    with rasterio.open(unscaled, "w", transform=north_up, **{**profile, "dtype": "uint16"}) as dst:
        dst.write(np.full((1, 20, 20), 14000, np.uint16))
    with pytest.raises(SourceFormatError, match="unexpected scale/offset.*found scale 1, offset 0"):
        read_modis([unscaled], settings=_settings())


def test_no_overlap_geotiff(tmp_path):
    lat, lon = _grid(80.0, 81.0, 20.0, 21.0)
    path = write_mod11a1_geotiff(tmp_path / "lst.tif", day=DAY, lat=lat, lon=lon,
                                 lst_k=np.full((lat.size, lon.size), 280.0))
    with pytest.raises(NoOverlapError, match="does not overlap the region"):
        read_modis([path], settings=_settings())


# --------------------------------------------------------------------------- broken files
def test_empty_file(tmp_path):
    path = tmp_path / "MOD11A1.A2020183.h25v05.061.hdf"
    path.write_bytes(b"")
    with pytest.raises(SourceFormatError, match="the file is empty"):
        read_source("modis", path, settings=_settings())


def test_unknown_format(tmp_path):
    path = tmp_path / "MOD11A1.A2020183.h25v05.061.hdf"
    path.write_bytes(b"<!DOCTYPE html><html>Earthdata login</html>")
    with pytest.raises(SourceFormatError, match=r"unrecognised file format; expected HDF4 \(MOD11A1 tile\) or GeoTIFF"):
        read_source("modis", path, settings=_settings())


def test_truncated_hdf(tmp_path):
    full = _tile(tmp_path, 26, 5, value=300.0)
    cut = tmp_path / "cut" / full.name
    cut.parent.mkdir()
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    with pytest.raises(SourceFormatError, match="cannot be opened as HDF4.*truncated"):
        read_source("modis", cut, settings=_settings())


def test_truncated_geotiff(tmp_path):
    lat, lon = _grid(101.0, 101.5, 36.0, 36.5)
    rng = np.random.default_rng(0)
    full = write_mod11a1_geotiff(tmp_path / "lst.tif", day=DAY, lat=lat, lon=lon,
                                 lst_k=rng.uniform(250, 320, (lat.size, lon.size)))
    for fraction in (0.05, 0.5, 0.95):
        cut = tmp_path / f"cut{fraction}.tif"
        cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * fraction)])
        with pytest.raises(SourceFormatError, match="truncated"):
            read_source("modis", cut, settings=_settings())


def test_hdf4_without_eos_metadata(tmp_path):
    from pyhdf.SD import SD, SDC

    path = tmp_path / "MOD11A1.A2020183.plain.hdf"
    sd = SD(str(path), SDC.WRITE | SDC.CREATE)
    s = sd.create("LST_Day_1km", SDC.UINT16, (4, 4))
    s[:] = np.full((4, 4), 15000, np.uint16)
    s.endaccess()
    sd.end()
    with pytest.raises(SourceFormatError, match="not an HDF-EOS file"):
        read_source("modis", path, settings=_settings())


def test_mixed_forms_refused(tmp_path):
    lat, lon = _grid(101.0, 101.5, 36.0, 36.5)
    tif = write_mod11a1_geotiff(tmp_path / "lst.tif", day=DAY, lat=lat, lon=lon,
                                lst_k=np.full((lat.size, lon.size), 280.0))
    hdf = _tile(tmp_path, 26, 5, value=300.0)
    with pytest.raises(SourceFormatError, match="HDF4-EOS tiles and GeoTIFFs mixed"):
        read_modis([hdf, tif], settings=_settings())
