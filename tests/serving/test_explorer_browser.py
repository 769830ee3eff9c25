"""The explorer in a real browser: Debian's headless Chromium driven by playwright, against the real
API served by uvicorn on loopback.

Checks pixels, not only the DOM: the map frame holds coloured (viridis) overlay pixels, the chart
canvas is drawn after a click, and choosing another day changes the map's pixels.  Screenshots
are kept under ``$ETFUSE_TEST_ARTIFACTS/explorer`` (default ``var/test-artifacts/explorer`` in the
checkout; CI keeps that folder).  Skips with the reason when Chromium or the built bundle is absent.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.explorer_api import EXPLORER_DIST
from tests.serving.interval_files import with_interval
from tests.services import served_app

CHROMIUM = Path(os.environ.get("ETFUSE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[2]
DAYS = pd.date_range("2021-07-01", "2021-07-03")

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
    pytest.mark.skipif(not (EXPLORER_DIST / "index.html").is_file(),
                       reason=f"explorer bundle not built in {EXPLORER_DIST} (make explorer)"),
]


def artifacts() -> Path:
    folder = Path(os.environ.get("ETFUSE_TEST_ARTIFACTS", REPO / "var" / "test-artifacts")) / "explorer"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def field(shape: tuple[int, int], k: int) -> np.ndarray:
    """A field that differs visibly between days: a west-east ramp on day 0, north-south after."""
    rows, cols = shape
    y = np.linspace(0, 1, rows, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, cols, dtype=np.float32)[None, :]
    values = (0.5 + 5.0 * (x if k == 0 else y) * np.ones_like(y * x)).astype(np.float32)
    values[:10, :10] = np.nan
    return values


@pytest.fixture(scope="module")
def server(tmp_path_factory):

    from etfuse.settings import load_settings
    from serving.api import create_app
    from serving.product import ProductStore
    from tests.standins import FakeRegistry

    home = tmp_path_factory.mktemp("explorer_home")
    settings = load_settings(home=home, region="test", serving={"quicklooks": False})
    store = ProductStore(settings)
    for k, day in enumerate(DAYS):
        values = field(store.grid.shape, k)
        store.write_day(day, values, model_version=3,
                        status="provisional" if k == len(DAYS) - 1 else "final",
                        sources_used={"era5land", "gleam"}, fingerprint=hashlib.sha256(f"b{k}".encode()).hexdigest())
        if k > 0:                     # the 90 % interval from the second day on; the first is an older model's
            with_interval(store, day, values - 0.8, values + 1.2)
    with served_app(create_app(settings, product=store, registry=FakeRegistry()), join_s=10) as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
            page.errors = errors
            page.goto(server + "/")
            page.wait_for_selector("body[data-ready='true']", timeout=30_000)
            page.wait_for_selector("body[data-overlay-loaded='true']", timeout=30_000)
            yield page
        finally:
            browser.close()


def rgb(png: bytes) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def coloured_fraction(pixels: np.ndarray) -> float:
    """Share of pixels with a clear hue (the viridis overlay), not white, grey or black lines."""
    spread = pixels.max(axis=2) - pixels.min(axis=2)
    return float((spread > 40).mean())


def test_page_loads_and_map_is_drawn(page):
    shot = page.locator("#map").screenshot()
    (artifacts() / "01_map_last_day.png").write_bytes(shot)
    page.screenshot(path=str(artifacts() / "01_page.png"))
    pixels = rgb(shot)
    assert coloured_fraction(pixels) > 0.2, "the map frame holds almost no coloured overlay pixels"
    assert page.locator("#badge").inner_text() == "provisional"
    assert "sources used: era5land, gleam" in page.locator("#dayinfo").inner_text()
    ramp = rgb(page.locator("#cb-ramp").screenshot())
    assert coloured_fraction(ramp) > 0.8, "the colour bar is not drawn"
    assert page.evaluate("document.querySelectorAll('.leaflet-overlay-pane path').length") >= 2   # outline, frame
    assert not page.errors, page.errors


def test_click_returns_a_series(page):
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("body[data-series-points]", timeout=20_000)
    assert page.evaluate("document.body.dataset.seriesPoints") == str(len(DAYS))
    assert "cell" in page.locator("#pointinfo").inner_text()
    chart = rgb(page.locator("#chart canvas").first.screenshot())
    (artifacts() / "02_chart.png").write_bytes(page.locator("#chart").screenshot())
    line = (np.abs(chart - np.array([0x1f, 0x77, 0xb4])).sum(axis=2) < 60).sum()
    assert line > 20, "the series line is not drawn on the chart canvas"
    # the 90 % band: shaded on the two days that have it, said under the chart
    assert page.evaluate("document.body.dataset.seriesBand") == str(len(DAYS) - 1)
    assert "90 % interval (2 of 3 days" in page.locator("#pointinfo").inner_text()
    shade = np.array([31, 119, 180]) * 0.22 + 255 * 0.78           # rgba(31,119,180,0.22) on white
    shaded = (np.abs(chart - shade).sum(axis=2) < 30).sum()
    assert shaded > 200, f"the interval band is not shaded on the chart ({shaded} pixels)"
    csv = page.locator("#dl-csv").get_attribute("href")
    nc = page.locator("#dl-nc").get_attribute("href")
    assert "format=csv" in csv and nc.startswith("/subset.nc?")
    body = page.request.get(page.url.rstrip("/") + csv)
    assert body.ok and body.text().count("\n") == len(DAYS) + 1
    netcdf = page.request.get(page.url.rstrip("/") + nc)
    assert netcdf.ok and netcdf.body()[:4] == b"\x89HDF"


def test_date_picker_changes_the_map(page):
    before = rgb(page.locator("#map").screenshot())
    first = f"{DAYS[0]:%Y-%m-%d}"
    page.fill("#day", first)
    page.dispatch_event("#day", "change")
    page.wait_for_selector(f"body[data-day='{first}'][data-overlay-loaded='true']", timeout=20_000)
    time.sleep(0.3)                                  # the new image is decoded and painted
    shot = page.locator("#map").screenshot()
    (artifacts() / "03_map_first_day.png").write_bytes(shot)
    after = rgb(shot)
    changed = float((np.abs(after - before).sum(axis=2) > 30).mean())
    assert changed > 0.1, f"only {changed:.1%} of the map's pixels changed with the day"
    assert page.locator("#badge").inner_text() == "final"


def test_drawn_box_gives_the_area_mean(page):
    page.click("#drawbox")
    box = page.locator("#map").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 60, cy - 40)
    page.mouse.down()
    page.mouse.move(cx, cy, steps=5)
    page.mouse.move(cx + 60, cy + 40, steps=5)
    page.mouse.up()
    page.wait_for_selector("body[data-area-mean]", timeout=20_000)
    mean = float(page.evaluate("document.body.dataset.areaMean"))
    assert 0.5 < mean < 5.5
    assert "mean" in page.locator("#areainfo").inner_text()
    page.screenshot(path=str(artifacts() / "04_area_box.png"))
    shutil.copy(artifacts() / "04_area_box.png", artifacts() / "explorer_latest.png")
