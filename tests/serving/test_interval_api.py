"""The 90 % interval (et_q05, et_q95) through the API: a point's series (JSON and CSV), area
statistics and map overlays; null or 404 on days whose model gave no interval."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.product import ProductStore
from tests.serving.interval_files import with_interval
from tests.standins import FakeRegistry

DAYS = pd.date_range("2021-07-01", "2021-07-04")
#: days written by a model that gives the interval; 2021-07-01 is an older model's day (none)
WITH_INTERVAL = DAYS[1:]


@pytest.fixture
def store(settings):
    store = ProductStore(settings)
    for k, day in enumerate(DAYS):
        et = np.full(store.grid.shape, 1.0 + k, np.float32)
        et[:, : store.grid.shape[1] // 2] += 0.25           # west half differs
        et[:5, :5] = np.nan
        store.write_day(day, et, model_version=1 if k == 0 else 2, status="final", sources_used={"era5land"},
                        fingerprint=hashlib.sha256(f"i{k}".encode()).hexdigest())
        if day in WITH_INTERVAL:
            with_interval(store, day, et - 0.5 - 0.1 * k, et + 0.75)
    return store


@pytest.fixture
def client(settings, store):
    return TestClient(create_app(settings.model_copy(update={"distribution": settings.distribution.model_copy(
        update={"render_lane": "thread"})}), product=store, registry=FakeRegistry()))


def point(client, **params):
    return client.get("/timeseries", params={"lat": 36.7, "lon": 102.2, "start": "2021-07-01", "end": "2021-07-04",
                                             **params})


def check_series(values: dict) -> None:
    assert values["2021-07-01"]["et_q05_mm"] is None and values["2021-07-01"]["et_q95_mm"] is None
    assert values["2021-07-01"]["et_mm"] == pytest.approx(1.0)
    for k, day in enumerate(DAYS):
        if day in WITH_INTERVAL:
            v = values[f"{day:%Y-%m-%d}"]
            assert v["et_mm"] == pytest.approx(1.0 + k)
            assert v["et_q05_mm"] == pytest.approx(0.5 + k - 0.1 * k, abs=0.006)
            assert v["et_q95_mm"] == pytest.approx(1.75 + k, abs=0.006)
            assert v["et_q05_mm"] <= v["et_mm"] <= v["et_q95_mm"]


def test_series_json_has_the_interval_where_the_day_has_one(client):
    r = point(client)
    assert r.status_code == 200, r.text
    check_series({v["date"]: v for v in r.json()["values"]})


def test_series_from_the_yearly_file_takes_the_interval_from_the_daily_files(client, store):
    """The yearly file (built without interval variables) serves ET; the interval still comes from the days."""
    store.build_year(2021)
    frame = store.read_point(36.7, 102.2, DAYS[0], DAYS[-1])
    assert frame.attrs["days_from_yearly"] == len(DAYS)
    r = point(client)
    check_series({v["date"]: v for v in r.json()["values"]})


def test_series_csv_has_interval_columns_empty_on_days_without(client):
    r = point(client, format="csv")
    frame = pd.read_csv(io.StringIO(r.text))
    assert {"et_q05_mm", "et_q95_mm"} <= set(frame.columns)
    assert frame["et_q05_mm"].isna().tolist() == [True, False, False, False]
    assert frame["et_q95_mm"].iloc[1:].round(2).tolist() == [2.75, 3.75, 4.75]
    assert "2021-07-01,1.000," in r.text.replace("\r", "")


def test_area_gives_the_box_means_of_the_bounds(client, store):
    box = {"west": 101.0, "south": 36.0, "east": 101.5, "north": 36.5}     # the west half: et = 1.25 + k
    with_band = client.get("/area", params={**box, "date": "2021-07-03"}).json()
    assert with_band["mean_mm"] == pytest.approx(3.25)
    assert with_band["et_q05_mean_mm"] == pytest.approx(3.25 - 0.5 - 0.2, abs=0.006)
    assert with_band["et_q95_mean_mm"] == pytest.approx(3.25 + 0.75, abs=0.006)
    without = client.get("/area", params={**box, "date": "2021-07-01"}).json()
    assert without["mean_mm"] == pytest.approx(1.25)
    assert without["et_q05_mean_mm"] is None and without["et_q95_mean_mm"] is None


def test_map_of_a_bound_and_404_for_a_day_without(client):
    from PIL import Image
    et = client.get("/overlay/2021-07-02.png")
    q95 = client.get("/overlay/2021-07-02.png", params={"layer": "et_q95"})
    assert et.status_code == 200 and q95.status_code == 200 and et.content != q95.content
    pixels = np.asarray(Image.open(io.BytesIO(q95.content)))
    assert (pixels[:2, :2, 3] == 0).all() and (pixels[50:, 50:, 3] == 255).all()
    missing = client.get("/overlay/2021-07-01.png", params={"layer": "et_q05"})
    assert missing.status_code == 404 and "et_q05" in missing.json()["detail"]
    assert client.get("/overlay/2021-07-02.png", params={"layer": "lst"}).status_code == 422


def test_a_rewritten_day_without_interval_drops_it(client, store):
    """A day rewritten by a model without intervals: the new file version has none, nothing stale is served."""
    assert point(client).json()["values"][2]["et_q05_mm"] is not None
    store.write_day(DAYS[2], np.full(store.grid.shape, 9.0, np.float32), model_version=3, status="final",
                    sources_used={"era5land"}, fingerprint=hashlib.sha256(b"again").hexdigest())
    v = point(client).json()["values"][2]
    assert v["et_mm"] == pytest.approx(9.0) and v["et_q05_mm"] is None and v["et_q95_mm"] is None
