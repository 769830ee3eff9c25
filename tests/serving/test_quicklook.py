"""Quicklook PNGs: written beside the product, fixed colour scale, up to date with the stored day."""

from __future__ import annotations

import hashlib
import time

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from serving import quicklook as ql
from serving.product import DayNotFoundError, ProductStore

DAY = pd.Timestamp("2021-07-15")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fp(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write(store, values, key="a", status="final", model=3):
    return store.write_day(DAY, values, model_version=model, status=status, sources_used={"era5land", "gleam"},
                           fingerprint=fp(key))


def _share_near(rgb: np.ndarray, colour, tol: int = 6) -> float:
    target = np.array([round(255 * c) for c in colour[:3]])
    return float(np.mean(np.all(np.abs(rgb.astype(int) - target) <= tol, axis=-1)))


def test_write_day_draws_the_quicklook_beside_the_product(settings):
    assert settings.serving.quicklooks
    store = ProductStore(settings)
    values = np.full(store.grid.shape, 3.0, dtype=np.float32)
    _write(store, values, status="provisional")
    png = store.quicklook_path(DAY)
    assert png == store.root / "quicklooks" / "2021" / "etfuse_et_2021-07-15.png"
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and 10_000 < len(data) < 1_000_000
    with Image.open(png) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert 500 <= width <= 1300 and height == 600
        text = dict(image.text)
    record = store.record(DAY)
    assert text["etfuse_day"] == "2021-07-15" and text["etfuse_status"] == "provisional"
    assert text["etfuse_model_version"] == "3" and text["etfuse_file_sha256"] == record.file_sha256
    assert not list(png.parent.glob(".*.tmp"))


def test_quicklook_is_redrawn_only_when_the_day_changes(settings):
    store = ProductStore(settings)
    values = np.full(store.grid.shape, 2.0, dtype=np.float32)
    _write(store, values, key="a")
    png = store.quicklook_path(DAY)
    before = png.stat().st_mtime_ns
    time.sleep(0.01)
    assert store.quicklook(DAY) == png and png.stat().st_mtime_ns == before          # up to date: kept
    assert _write(store, values, key="a") == "unchanged" and png.stat().st_mtime_ns == before
    _write(store, values + 1, key="b", model=4)                                      # replaced: redrawn
    assert png.stat().st_mtime_ns != before
    assert ql.png_text(png)["etfuse_model_version"] == "4"
    png.unlink()
    assert store.quicklook(DAY).exists()                                            # missing: drawn again
    with pytest.raises(DayNotFoundError):
        store.quicklook("2021-07-16")


def test_fixed_colour_scale_and_missing_cells(tmp_path):
    bbox = (100.5, 35.5, 102.5, 37.5)
    values = np.zeros((200, 200), dtype=np.float32)
    values[:, 100:] = 9.0                       # above the scale: drawn in the top colour
    values[:40, :] = np.nan
    png = ql.render(tmp_path / "q.png", values, bbox, title="t")
    rgb = np.asarray(Image.open(png).convert("RGB"))
    viridis = mpl.colormaps["viridis"]
    low, high = _share_near(rgb, viridis(0.0)), _share_near(rgb, viridis(1.0))
    grey = _share_near(rgb, mpl.colors.to_rgba(ql.NO_VALUE_COLOUR), tol=2)
    assert low > 0.05 and high > 0.05 and grey > 0.02
    assert abs(low - high) < 0.5 * max(low, high)           # the two halves are drawn alike in size
    assert ql.VMIN_MM == 0.0 and ql.VMAX_MM == 6.0


def test_block_mean_ignores_nan_and_keeps_partial_blocks():
    values = np.arange(25, dtype=np.float32).reshape(5, 5)
    values[0, 0] = np.nan
    out = ql.block_mean(values, 2)
    assert out.shape == (3, 3)
    assert out[0, 0] == pytest.approx((1 + 5 + 6) / 3)
    assert out[2, 2] == 24 and out[0, 2] == pytest.approx((4 + 9) / 2)
    assert np.isnan(ql.block_mean(np.full((4, 4), np.nan), 2)).all()
    assert np.array_equal(ql.block_mean(values, 1), values, equal_nan=True)


def test_full_province_grid_is_downsampled_and_fast(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 6, size=(850, 1390)).astype(np.float32)
    bbox = (89.5, 31.37, 103.4, 39.87)
    ql.render(tmp_path / "warm.png", values[:100, :100], bbox, title="warm-up")
    start = time.perf_counter()
    png = ql.render(tmp_path / "province.png", values, bbox, title="province")
    seconds = time.perf_counter() - start
    assert seconds < 3.0, seconds                      # about 0.3 s here; generous for a loaded CI machine
    with Image.open(png) as image:
        width, height = image.size
    assert width > height and height == 600


def test_a_day_with_an_interval_gets_a_second_map_of_its_width(settings):
    """The quicklook of a day with et_q05/et_q95 is twice as wide, and its right half shows the
    interval width in the width colour map (2 mm on the 0-4 mm scale: the map's middle colour)."""
    store = ProductStore(settings)
    et = np.full(store.grid.shape, 3.0, dtype=np.float32)
    store.write_day(DAY, et, model_version=3, status="final", sources_used={"era5land"}, fingerprint=fp("i"),
                    bounds=(et - 1.0, et + 1.0))
    with Image.open(store.quicklook_path(DAY)) as image:
        width, height = image.size
        rgb = np.asarray(image.convert("RGB"))
    assert height == 600 and width > 1000
    middle = mpl.colormaps[ql.WIDTH_CMAP](0.5)
    assert _share_near(rgb[:, width // 2:], middle) > 0.05
    assert _share_near(rgb[:, : width // 2], middle) < 0.001
