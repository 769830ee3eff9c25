"""The HTTP API: happy paths, 4xx paths, the model endpoint following the champion."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from etfuse.grid import TargetGrid
from serving.api import create_app
from serving.product import ProductStore
from tests.standins import FakeRegistry


@pytest.fixture
def product(settings):
    grid = TargetGrid.from_region(settings.region)
    store = ProductStore(settings, grid)
    rows, cols = grid.shape
    for k, day in enumerate(pd.date_range("2021-07-01", "2021-07-05")):
        field = np.full((rows, cols), 1.0 + k, dtype=np.float32)
        field[:, cols // 2:] += 0.5
        store.write_day(day, field, model_version=3, status="provisional" if k == 4 else "final",
                        sources_used={"era5land", "gleam"} if k < 4 else {"era5land"},
                        fingerprint=hashlib.sha256(f"fp{k}".encode()).hexdigest())
    return store


@pytest.fixture
def client(settings, product):
    return TestClient(create_app(settings, product=product, registry=FakeRegistry()))


def test_health_ready_model(client):
    assert client.get("/health").json()["status"] == "ok"
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    model = client.get("/model").json()
    assert model["version"] == 3 and model["metrics"] == {"heldout_fused_rmse": 0.43}


def test_timeseries_json_and_csv(client):
    r = client.get("/timeseries", params={"lat": 36.7, "lon": 101.75, "start": "2021-06-30", "end": "2021-07-05"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["units"] == "mm day-1" and abs(body["cell_lat"] - 36.705) < 1e-6
    values = {v["date"]: v for v in body["values"]}
    assert values["2021-07-01"]["et_mm"] == pytest.approx(1.5) and values["2021-07-01"]["status"] == "final"
    assert values["2021-07-05"]["status"] == "provisional" and values["2021-07-05"]["model_version"] == 3
    assert values.get("2021-06-30", {"et_mm": None})["et_mm"] is None
    csv = client.get("/timeseries", params={"lat": 36.7, "lon": 100.6, "start": "2021-07-01", "end": "2021-07-02",
                                            "format": "csv"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert "et_mm" in lines[0] and len(lines) == 3 and "1.000" in lines[1]


def test_area_statistics(client):
    r = client.get("/area", params={"west": 100.5, "south": 35.5, "east": 102.5, "north": 37.5, "date": "2021-07-02"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["cells"] == 200 * 200 and body["valid_cells"] == 200 * 200
    assert body["min_mm"] == pytest.approx(2.0) and body["max_mm"] == pytest.approx(2.5)
    assert body["mean_mm"] == pytest.approx(2.25) and body["total_m3"] > 0


def test_map_png(client):
    r = client.get("/map/2021-07-03.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"


@pytest.mark.parametrize("path,params,status,text", [
    ("/timeseries", {"lat": 45.0, "lon": 101.0, "start": "2021-07-01", "end": "2021-07-02"}, 422, "outside the product region"),
    ("/timeseries", {"lat": 36.7, "lon": 101.0, "start": "2021-07-05", "end": "2021-07-01"}, 422, "before start"),
    ("/timeseries", {"lat": 36.7, "lon": 101.0, "start": "1990-01-01", "end": "2021-07-01"}, 422, "at most"),
    ("/timeseries", {"lat": "north", "lon": 101.0, "start": "2021-07-01", "end": "2021-07-01"}, 422, "lat"),
    ("/timeseries", {"lat": 36.7, "lon": 101.0, "start": "2021-02-30", "end": "2021-07-01"}, 422, "start"),
    ("/area", {"west": 102, "south": 36, "east": 101, "north": 37, "date": "2021-07-01"}, 422, "west < east"),
    ("/area", {"west": 10, "south": 36, "east": 11, "north": 37, "date": "2021-07-01"}, 422, "does not overlap"),
    ("/area", {"west": 101, "south": 36, "east": 101.001, "north": 36.001, "date": "2021-07-01"}, 422, "holds no cell"),
    ("/area", {"west": 101, "south": 36, "east": 102, "north": 37, "date": "2021-08-01"}, 404, "no product for 2021-08-01"),
    ("/map/2021-08-01.png", {}, 404, "no product for 2021-08-01"),
    ("/map/notaday.png", {}, 422, ""),
])
def test_bad_requests_are_4xx_with_a_message(client, path, params, status, text):
    r = client.get(path, params=params)
    assert r.status_code == status, r.text
    assert text in r.text


def test_area_size_limit(settings, product):
    small = settings.model_copy(update={"serving": settings.serving.model_copy(update={"max_area_cells": 100})})
    c = TestClient(create_app(small, product=product))
    r = c.get("/area", params={"west": 100.5, "south": 35.5, "east": 102.5, "north": 37.5, "date": "2021-07-02"})
    assert r.status_code == 422 and "at most 100" in r.text


def test_not_ready_without_product(settings):
    c = TestClient(create_app(settings))
    r = c.get("/ready")
    assert r.status_code == 503 and "no product day" in r.text
    assert c.get("/model").json()["status"] == "no registry configured"


def test_openapi_docs(client):
    spec = client.get("/openapi.json").json()
    assert {"/timeseries", "/area", "/map/{day}.png", "/model", "/health", "/ready"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200
