"""The HTTP API under generated input: schemathesis derives requests from the OpenAPI spec (valid
and invalid: wrong types, out-of-range numbers, odd strings, huge values, missing parameters) and
no request may end in a 5xx.  Also: the API is read-only, and requests are bounded (URL and body
size, time range, area) before any file is read.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency (pyproject [dev])")
hypothesis = pytest.importorskip("hypothesis")

from fastapi.testclient import TestClient  # noqa: E402

from serving.api import MAX_BODY_BYTES, MAX_URL_BYTES, create_app  # noqa: E402
from tests.standins import DownRegistry, FakeRegistry  # noqa: E402

#: generated requests per API operation and generation mode
MAX_EXAMPLES = 40


@pytest.fixture(scope="module")
def api_settings(tmp_path_factory):
    from etfuse.settings import load_settings
    from tests.conftest import SMALL_WORLD
    w, s, e, n = SMALL_WORLD["bbox"]
    return load_settings(home=tmp_path_factory.mktemp("api") / "home",
                         region={"name": "small", "lon_min": w, "lon_max": e, "lat_min": s, "lat_max": n,
                                 "resolution_deg": SMALL_WORLD["resolution_deg"]},
                         serving={"max_range_days": 366, "max_area_cells": 900},
                         distribution={"rate_limit_per_minute": 0})   # every generated request reaches its route


@pytest.fixture(scope="module")
def product(api_settings):
    """A small product store (5 days over 50 x 50 cells), as tests/serving/test_api.py builds one."""
    from serving.product import ProductStore
    store = ProductStore(api_settings)
    rows, cols = store.grid.shape
    for k, day in enumerate(pd.date_range("2021-07-01", "2021-07-05")):
        field = np.full((rows, cols), 1.0 + k, dtype=np.float32)
        field[:, cols // 2:] = np.nan if k == 2 else field[:, cols // 2:] + 0.5
        store.write_day(day, field, model_version=3, status="provisional" if k == 4 else "final",
                        sources_used={"era5land", "gleam"}, fingerprint=hashlib.sha256(f"fp{k}".encode()).hexdigest(),
                        quicklook=False)
    return store


@pytest.fixture(scope="module", params=["registry up", "registry down"])
def api_schema(request, api_settings, product):
    registry = FakeRegistry() if request.param == "registry up" else DownRegistry()
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(api_settings, product=product, registry=registry))
    return schema, request.param == "registry down"


# schemathesis' pytest plugin (``schema.parametrize()`` / ``from_fixture``) sets ``Node._nodeid``, which
# pytest 9.2 no longer has; the same generation is driven here through hypothesis directly.
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_generated_request_gets_a_server_error(api_schema, mode, record_property):
    api_schema, registry_down = api_schema
    """Every operation of the OpenAPI spec, ``MAX_EXAMPLES`` generated requests each, valid
    (``positive``) and invalid (``negative``: wrong types, out-of-range values, missing or extra
    parameters): none may be answered with a 5xx (schemathesis' ``not_a_server_error``)."""
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    tried = {"cases": 0}

    def no_server_error(ctx, response, case):
        """``not_a_server_error``, except the 5xx the API promises while the registry is down: /ready
        and /model answer 503 (a dependency is unavailable; a readiness probe must say so), naming it."""
        if registry_down and case.operation.path in ("/ready", "/model") and response.status_code == 503:
            assert "registry" in response.text, response.text
            return None
        return not_a_server_error(ctx, response, case)

    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/timeseries", "/area", "/map/{day}.png", "/model", "/ready", "/health"}
    for operation in operations:
        strategy = operation.as_strategy(generation_mode=GenerationMode(mode))

        @hypothesis.given(case=strategy)
        @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))
        def call(case):
            tried["cases"] += 1
            case.call_and_validate(checks=[no_server_error])

        try:
            call()
        except hypothesis.errors.Unsatisfiable:     # an operation without negative variants (no parameters)
            assert mode == "negative", operation.label
    record_property("bad_inputs", tried["cases"])
    assert tried["cases"] >= len(operations)


# ----------------------------------------------------------------------------- read-only, bounded
@pytest.fixture(scope="module")
def client(api_settings, product):
    return TestClient(create_app(api_settings, product=product, registry=FakeRegistry()), raise_server_exceptions=False)


def test_the_api_is_read_only(client, api_settings):
    """No route mutates: every route answers GET (and HEAD) only, every other method is refused with
    405 on every path, whatever token is sent; ``serving.admin_token`` enables nothing while no
    mutating route exists."""
    app = client.app
    routes = [r for r in app.routes if getattr(r, "methods", None)]
    assert routes
    for route in routes:
        assert set(route.methods) <= {"GET", "HEAD"}, (route.path, route.methods)
    for path in ("/health", "/ready", "/model", "/days", "/timeseries", "/area", "/map/2021-07-01.png"):
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            for headers in ({}, {"Authorization": "Bearer admin"}, {"X-Admin-Token": "admin"}):
                r = client.request(method, path, headers=headers)
                assert r.status_code == 405, (method, path, r.status_code)
    assert api_settings.serving.admin_token is None


@pytest.mark.parametrize("path,params,status,text", [
    ("/timeseries", {"lat": 36.5, "lon": 101.5, "start": "2021-01-01", "end": "2022-12-31"}, 422, "at most 366"),
    ("/timeseries", {"lat": 36.5, "lon": 101.5, "start": "0001-01-01", "end": "9999-12-31"}, 422, "at most 366"),
    ("/area", {"west": 101.0, "south": 36.0, "east": 102.0, "north": 37.0, "date": "2021-07-01"}, 422, "at most 900"),
    ("/area", {"west": -1e308, "south": -1e308, "east": 1e308, "north": 1e308, "date": "2021-07-01"}, 422, "at most"),
    ("/area", {"west": "nan", "south": 36.0, "east": 101.2, "north": 36.2, "date": "2021-07-01"}, 422, ""),
    ("/timeseries", {"lat": "inf", "lon": 101.5, "start": "2021-07-01", "end": "2021-07-02"}, 422, ""),
    ("/map/..%2F..%2F..%2Fetc%2Fpasswd.png", {}, 404, ""),
    ("/map/2021-07-01%00.png", {}, 422, ""),
])
def test_time_range_and_area_are_bounded(client, path, params, status, text):
    r = client.get(path, params=params)
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert text in r.text


def test_request_size_is_bounded(client):
    long_query = {"lat": 36.5, "lon": 101.5, "start": "2021-07-01", "end": "2021-07-02", "x": "a" * MAX_URL_BYTES}
    r = client.get("/timeseries", params=long_query)
    assert r.status_code == 414 and "at most" in r.text
    r = client.get("/health", headers={"content-length": str(MAX_BODY_BYTES + 1)})
    assert r.status_code == 413
    r = client.request("GET", "/health", content=b"x" * (10 * MAX_BODY_BYTES))
    assert r.status_code == 413
    assert client.get("/health").status_code == 200
