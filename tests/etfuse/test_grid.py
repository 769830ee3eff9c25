import numpy as np
import pytest

from etfuse.grid import IndexMapCache, TargetGrid, bilinear_map, nearest_map
from etfuse.settings import load_settings


def test_province_grid_shape_and_centres():
    g = TargetGrid.from_region(load_settings().region)
    assert g.shape == (850, 1390)
    assert g.lat[0] == pytest.approx(39.865) and g.lat[-1] == pytest.approx(31.375)
    assert g.lon[0] == pytest.approx(89.505) and g.lon[-1] == pytest.approx(103.395)
    assert np.all(np.diff(g.lat) < 0) and np.all(np.diff(g.lon) > 0)


def test_cell_of_points():
    g = TargetGrid(100.0, 101.0, 36.0, 37.0, 0.1)
    rows, cols = g.cell_of(np.array([36.95, 36.01, 37.5]), np.array([100.05, 100.99, 100.5]))
    assert rows.tolist() == [0, 9, -1] and cols.tolist() == [0, 9, -1]


def test_nearest_map_matches_brute_force_on_descending_source():
    g = TargetGrid(100.0, 101.0, 36.0, 37.0, 0.01)
    src_lat = np.arange(37.375, 35.6, -0.25)           # GLEAM-like, north to south
    src_lon = np.arange(99.625, 101.4, 0.25)
    field = np.random.default_rng(0).normal(size=(2, src_lat.size, src_lon.size)).astype(np.float32)
    out = nearest_map(g, src_lat, src_lon).apply(field)
    assert out.shape == (2, 100, 100)
    for r, c in [(0, 0), (37, 62), (99, 99), (50, 12)]:
        i = np.argmin(np.abs(src_lat - g.lat[r]))
        j = np.argmin(np.abs(src_lon - g.lon[c]))
        assert out[1, r, c] == field[1, i, j]


def test_nearest_map_marks_cells_outside_the_source():
    g = TargetGrid(100.0, 101.0, 36.0, 37.0, 0.1)
    src_lat = np.array([36.95, 36.85])                  # covers only the top rows
    src_lon = np.arange(100.05, 101.0, 0.1)
    out = nearest_map(g, src_lat, src_lon).apply(np.ones((2, src_lon.size)))
    assert np.isfinite(out[:2]).all() and np.isnan(out[2:]).all()


def test_bilinear_map_is_exact_for_linear_fields_and_skips_missing_corners():
    g = TargetGrid(100.0, 101.0, 36.0, 37.0, 0.01)
    src_lat = np.arange(37.1, 35.85, -0.05)
    src_lon = np.arange(99.9, 101.15, 0.05)
    lat2, lon2 = np.meshgrid(src_lat, src_lon, indexing="ij")
    field = (3.0 * lat2 - 2.0 * lon2).astype(np.float32)
    out = bilinear_map(g, src_lat, src_lon).apply(field)
    glat, glon = np.meshgrid(g.lat, g.lon, indexing="ij")
    np.testing.assert_allclose(out, 3.0 * glat - 2.0 * glon, atol=2e-3)
    holed = field.copy()
    holed[10, 10] = np.nan                               # a cloud: neighbours still interpolate
    out2 = bilinear_map(g, src_lat, src_lon).apply(holed)
    assert np.isfinite(out2).all()


def test_irregular_source_axis_is_refused():
    g = TargetGrid(100.0, 101.0, 36.0, 37.0, 0.1)
    with pytest.raises(ValueError, match="not a regular axis"):
        nearest_map(g, np.array([37.0, 36.9, 36.5]), np.arange(100.0, 101.0, 0.1))


def test_cache_reuses_maps_in_memory_and_on_disk(tmp_path):
    g = TargetGrid(100.0, 101.0, 36.0, 37.0, 0.01)
    lat, lon = np.arange(37.05, 35.9, -0.1), np.arange(99.95, 101.1, 0.1)
    cache = IndexMapCache(tmp_path)
    first = cache.get(g, lat, lon, "nearest")
    assert cache.get(g, lat, lon, "nearest") is first
    assert len(list(tmp_path.glob("nearest-*.npz"))) == 1
    fresh = IndexMapCache(tmp_path).get(g, lat, lon, "nearest")   # another process: read from disk
    np.testing.assert_array_equal(fresh.rows, first.rows)
    other = cache.get(g, lat + 0.05, lon, "nearest")               # a different source grid, a different map
    assert not np.array_equal(other.rows, first.rows)
    bil = cache.get(g, lat, lon, "bilinear")
    assert len(list(tmp_path.glob("bilinear-*.npz"))) == 1 and bil.row_w.shape == (100,)
    with pytest.raises(ValueError, match="unknown resampling method"):
        cache.get(g, lat, lon, "cubic")


def test_index_maps_stay_small_for_the_province():
    """Maps are separable: the province's map from ERA5-Land is kilobytes, not a 1.18 M-cell array."""
    g = TargetGrid.from_region(load_settings().region)
    m = nearest_map(g, np.arange(40.4, 30.8, -0.1), np.arange(89.0, 104.0, 0.1))
    assert m.rows.nbytes + m.cols.nbytes < 20_000
