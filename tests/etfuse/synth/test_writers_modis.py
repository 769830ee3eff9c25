"""Synthetic MOD11A1 writers: geometry and attributes match the real tile; GeoTIFF bands and tags."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from etfuse.synth.writers_modis import (SPHERE_RADIUS_M, TILE_SIZE_M, doy_name, mod11a1_name,
                                        sinusoidal_tile_latlon, tile_bounds_m, write_mod11a1_geotiff,
                                        write_mod11a1_hdf)
from tests.conftest import realdata_dir



REAL_TILE = realdata_dir() / "modis" / "MOD11A1.hdf"
needs_real = pytest.mark.skipif(not REAL_TILE.is_file(), reason=f"real MOD11A1 tile not available at {REAL_TILE} "
                                "(set ETFUSE_REALDATA to the realdata folder)")


def _attrs(path: Path):
    from pyhdf.SD import SD, SDC

    sd = SD(str(path), SDC.READ)
    try:
        glob = {k: v for k, v in sd.attributes(full=1).items()}
        sds = {}
        for name in ("LST_Day_1km", "QC_Day"):
            s = sd.select(name)
            sds[name] = (s.attributes(full=1), s.info(), [s.dim(i).info()[0] for i in range(2)], s.getcompress(),
                         s.get())
            s.endaccess()
    finally:
        sd.end()
    return glob, sds


@pytest.fixture(scope="module")
def h14v09(tmp_path_factory) -> Path:
    """The real tile's position and day, written by the synthetic writer."""
    lat, lon = sinusoidal_tile_latlon(14, 9)
    lst = np.where(np.isnan(lon), np.nan, 300.0 + 0.1 * lat)
    lst[:100, :100] = np.nan
    path = tmp_path_factory.mktemp("w") / mod11a1_name("2019-11-01", 14, 9)
    return write_mod11a1_hdf(path, day="2019-11-01", h=14, v=9, lst_k=lst)


def test_tile_geometry():
    assert TILE_SIZE_M == pytest.approx(1111950.519767, abs=1e-5)
    assert tile_bounds_m(25, 5) == pytest.approx((7 * TILE_SIZE_M, 4 * TILE_SIZE_M, 8 * TILE_SIZE_M, 3 * TILE_SIZE_M))
    lat, lon = sinusoidal_tile_latlon(25, 5)
    assert lat.shape == lon.shape == (1200, 1200)
    assert lat[0, 0] == pytest.approx(40 - 10 / 2400) and lat[-1, 0] == pytest.approx(30 + 10 / 2400)
    assert np.all(lat[:, :1] == lat)                                   # latitude constant along a row
    # forward check: each pixel centre projects back into its own pixel
    ulx, uly, _, _ = tile_bounds_m(25, 5)
    px = TILE_SIZE_M / 1200
    rng = np.random.default_rng(1)
    i, j = rng.integers(0, 1200, 50), rng.integers(0, 1200, 50)
    la, lo = np.deg2rad(lat[i, j]), np.deg2rad(lon[i, j])
    assert np.array_equal(np.floor((uly - SPHERE_RADIUS_M * la) / px), i)
    assert np.array_equal(np.floor((SPHERE_RADIUS_M * lo * np.cos(la) - ulx) / px), j)
    # at the west edge of the globe some pixels of h00v08 are outside the projection
    _, lon_edge = sinusoidal_tile_latlon(0, 8, n=120)
    assert np.isnan(lon_edge).any() and np.isfinite(lon_edge).any()
    assert np.nanmin(lon_edge) >= -180.0
    with pytest.raises(ValueError, match="h 0..35"):
        tile_bounds_m(36, 5)


def test_names():
    assert mod11a1_name("2019-11-01", 25, 5) == "MOD11A1.A2019305.h25v05.061.2019306084028.hdf"
    assert doy_name("2019-11-01") == "MOD11A1.061_LST_Day_1km_doy2019305_aid0001.tif"


def test_hdf_values_and_default_qc(h14v09):
    _, sds = _attrs(h14v09)
    raw, qc = sds["LST_Day_1km"][4], sds["QC_Day"][4]
    assert raw.dtype == np.uint16 and qc.dtype == np.uint8
    assert np.all(raw[:100, :100] == 0) and np.all(qc[:100, :100] == 0b10)
    lat, _ = sinusoidal_tile_latlon(14, 9)
    expected = np.rint((300.0 + 0.1 * lat[500, 500]) / 0.02)
    assert raw[500, 500] == expected and qc[500, 500] == 0


@needs_real
def test_hdf_layout_matches_real_tile(h14v09):
    real_glob, real_sds = _attrs(REAL_TILE)
    syn_glob, syn_sds = _attrs(h14v09)
    for key in ("HDFEOSVersion", "StructMetadata.0", "CoreMetadata.0", "ArchiveMetadata.0",
                "identifier_product_doi", "identifier_product_doi_authority"):
        assert key in syn_glob and syn_glob[key][2] == real_glob[key][2]            # same HDF type (char8)
    for name in ("LST_Day_1km", "QC_Day"):
        real_attrs, real_info, real_dims, real_comp, _ = real_sds[name]
        syn_attrs, syn_info, syn_dims, syn_comp, _ = syn_sds[name]
        assert {k: (v[0], v[2]) for k, v in syn_attrs.items()} == {k: (v[0], v[2]) for k, v in real_attrs.items()}
        assert syn_info[1:4] == real_info[1:4]                                        # rank, shape, type
        assert syn_dims == real_dims and syn_comp == real_comp
    # the geometry text of the real tile h14v09, character for character
    real_struct = real_glob["StructMetadata.0"][0].rstrip("\x00")
    syn_struct = syn_glob["StructMetadata.0"][0]
    assert len(syn_struct) == len(real_glob["StructMetadata.0"][0]) == 32000
    for key in ("GridName", "XDim", "YDim", "UpperLeftPointMtrs", "LowerRightMtrs", "Projection", "ProjParams",
                "SphereCode", "GridOrigin"):
        line = re.search(rf"^\s*{key}=.*$", real_struct, re.M).group(0)
        assert line in syn_struct, key
    # the date objects in CoreMetadata.0, same ODL layout
    for obj in ("RANGEBEGINNINGDATE", "RANGEENDINGDATE"):
        pattern = rf"OBJECT\s+= {obj}\n.*?END_OBJECT\s+= {obj}"
        real_block = re.search(pattern, real_glob["CoreMetadata.0"][0], re.S).group(0)
        syn_block = re.search(pattern, syn_glob["CoreMetadata.0"][0], re.S).group(0)
        assert syn_block == real_block


def test_hdf_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match="1200, 1200"):
        write_mod11a1_hdf(tmp_path / "x.hdf", day="2020-07-01", h=25, v=5, lst_k=np.zeros((10, 10)))


def test_geotiff_layout(tmp_path):
    import rasterio

    lat = 36.5 - (np.arange(50) + 0.5) * 0.01
    lon = 101.0 + (np.arange(80) + 0.5) * 0.01
    lst = np.full((50, 80), 290.0)
    lst[0, 0] = np.nan
    path = write_mod11a1_geotiff(tmp_path / "a.tif", day="2020-07-01", lat=lat[::-1], lon=lon, lst_k=lst[::-1])
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 4326
        assert src.descriptions == ("LST_Day_1km", "QC_Day")
        assert src.scales == (0.02, 1.0) and src.offsets == (0.0, 0.0) and src.nodata == 0
        assert src.units[0] == "K"
        assert src.tags()["RANGEBEGINNINGDATE"] == "2020-07-01"
        t = src.transform
        assert (t.a, t.b, t.d) == pytest.approx((0.01, 0.0, 0.0)) and t.e == pytest.approx(-0.01)
        assert (t.c, t.f) == pytest.approx((101.0, 36.5))
        band1, band2 = src.read(1), src.read(2)
    # lat was given ascending (south first); the file is north-up, so the NaN at the northern row is row 0
    assert band1[0, 0] == 0 and band2[0, 0] == 0b10
    assert np.all(band1[1:] == 14500) and np.all(band2[1:] == 0) and math.isclose(band1[0, 1] * 0.02, 290.0)
    with pytest.raises(ValueError, match="regular"):
        write_mod11a1_geotiff(tmp_path / "b.tif", day="2020-07-01", lat=np.array([36.0, 35.9, 35.5]),
                              lon=lon, lst_k=np.zeros((3, 80)))
