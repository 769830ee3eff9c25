import numpy as np
import pandas as pd
import pytest
import xarray as xr

from etfuse.grid import IndexMapCache, TargetGrid
from etfuse.ongrid import at_cells, lst_with_fallback, method_for, skt_offset_k, to_target


def test_at_cells_equals_full_regrid(tmp_path):
    g = TargetGrid(100.0, 101.0, 36.0, 37.0, 0.01)
    lat, lon = np.arange(37.05, 35.9, -0.1), np.arange(99.95, 101.1, 0.1)
    field = xr.DataArray(np.random.default_rng(1).random((3, lat.size, lon.size)).astype(np.float32),
                         dims=("time", "lat", "lon"),
                         coords={"time": pd.date_range("2021-01-01", periods=3), "lat": lat, "lon": lon})
    cache = IndexMapCache(tmp_path)
    rows, cols = np.array([0, 10, 99, 57]), np.array([3, 99, 0, 41])
    full = to_target(field, g, cache)
    np.testing.assert_array_equal(at_cells(field, g, cache, rows, cols), full[:, rows, cols])
    np.testing.assert_allclose(at_cells(field, g, cache, rows, cols, method="bilinear"),
                               to_target(field, g, cache, method="bilinear")[:, rows, cols])


def test_resampling_methods_follow_the_design():
    assert method_for("modis", "lst") == "bilinear"
    assert method_for("gleam", "et") == "nearest" and method_for("era5land", "skt") == "nearest"


def test_lst_fallback_uses_the_days_offset_and_flags_cells():
    skt = np.full((4, 4), 270.0, dtype=np.float32)
    lst = np.full((4, 4), 276.0, dtype=np.float32)
    lst[0, :] = np.nan                                   # clouds over the first row
    offset = skt_offset_k(lst, skt, default_offset_k=8.0, min_overlap_cells=5)
    assert offset == pytest.approx(6.0)
    out = lst_with_fallback(lst, skt, offset_k=offset)
    assert out.from_skt[0].all() and not out.from_skt[1:].any()
    np.testing.assert_allclose(out.lst_k, 276.0)


def test_lst_fallback_without_modis_uses_the_default_offset():
    skt = np.full((3, 3), 260.0, dtype=np.float32)
    assert skt_offset_k(None, skt, default_offset_k=8.0, min_overlap_cells=5) == 8.0
    few = np.full((3, 3), np.nan, dtype=np.float32)
    few[0, 0] = 300.0                                    # one clear cell is not enough to estimate
    assert skt_offset_k(few, skt, default_offset_k=8.0, min_overlap_cells=5) == 8.0
    out = lst_with_fallback(None, skt, offset_k=8.0)
    assert out.from_skt.all() and out.offset_k == 8.0 and np.allclose(out.lst_k, 268.0)
    only_modis = lst_with_fallback(np.full((3, 3), 280.0), None, offset_k=8.0)
    assert not only_modis.from_skt.any()
    with pytest.raises(ValueError, match="neither MODIS LST nor ERA5-Land skt"):
        lst_with_fallback(None, None, offset_k=8.0)
