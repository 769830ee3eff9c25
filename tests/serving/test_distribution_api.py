"""The API's distribution routes: explorer page and map overlay, NetCDF subsets, the token, the
rate limit and the Prometheus metrics."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from fastapi.testclient import TestClient

from etfuse.settings import load_settings
from serving import explorer_api
from serving.api import create_app
from serving.product import ProductStore
from tests.standins import FakeRegistry

TOKEN = "s3cret-token-for-tests"


def make_settings(tmp_path, **distribution):
    return load_settings(home=tmp_path / "home", region="test", serving={"quicklooks": False, "admin_token": TOKEN},
                         distribution={"rate_limit_per_minute": 0, **distribution})


@pytest.fixture
def store(tmp_path):
    store = ProductStore(make_settings(tmp_path))
    for k, day in enumerate(pd.date_range("2021-07-01", "2021-07-04")):
        values = np.full(store.grid.shape, 1.0 + k, np.float32)
        values[:20, :20] = np.nan
        store.write_day(day, values, model_version=4, status="final" if k < 3 else "provisional",
                        sources_used={"era5land", "gleam"}, fingerprint=hashlib.sha256(f"d{k}".encode()).hexdigest())
    return store


def client_for(tmp_path, store, **distribution) -> TestClient:
    return TestClient(create_app(make_settings(tmp_path, **distribution), product=store, registry=FakeRegistry()))


def test_explorer_page_says_how_to_build_when_missing(tmp_path, store, monkeypatch):
    monkeypatch.setattr(explorer_api, "EXPLORER_DIST", tmp_path / "no-bundle")
    r = client_for(tmp_path, store).get("/")
    assert r.status_code == 503 and "make explorer" in r.text and "npm ci" in r.text


def test_explorer_static_files_stay_in_the_bundle(tmp_path, store, monkeypatch):
    dist = tmp_path / "dist"
    (dist / "vendor").mkdir(parents=True)
    (dist / "index.html").write_text("<html>explorer</html>")
    (dist / "vendor" / "lib.js").write_text("var x;")
    (tmp_path / "secret.txt").write_text("no")
    monkeypatch.setattr(explorer_api, "EXPLORER_DIST", dist)
    client = client_for(tmp_path, store)
    assert client.get("/").text == "<html>explorer</html>"
    assert client.get("/static/vendor/lib.js").text == "var x;"
    assert client.get("/static/%2e%2e/secret.txt").status_code == 404


def test_legend_outline_and_overlay(tmp_path, store):
    from PIL import Image
    client = client_for(tmp_path, store)
    legend = client.get("/legend").json()
    assert legend["bounds"] == {"west": 100.5, "south": 35.5, "east": 102.5, "north": 37.5}
    assert legend["crs"] == "EPSG:4326" and len(legend["colours"]) == 11 and legend["colours"][0] == "#440154"
    outline = client.get("/outline.geojson").json()
    assert outline["features"][0]["geometry"]["coordinates"][0][0] == [100.5, 35.5]
    r = client.get("/overlay/2021-07-02.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(r.content)))
    assert image.shape == (200, 200, 4)
    assert (image[:20, :20, 3] == 0).all() and (image[30:, 30:, 3] == 255).all()     # no value: transparent
    assert client.get("/overlay/2021-08-01.png").status_code == 404
    assert list((store.root / "overlays" / "2021").glob("etfuse_et_2021-07-02_*.png"))


def test_qinghai_outline_is_the_approximate_polygon():
    settings = load_settings(region="qinghai")
    from etfuse.grid import TargetGrid
    outline = explorer_api.outline_geojson(settings, TargetGrid.from_region(settings.region))
    feature = outline["features"][0]
    ring = np.array(feature["geometry"]["coordinates"][0])
    assert feature["properties"]["approximate"] is True and (ring[0] == ring[-1]).all()
    w, s, e, n = settings.region.bbox
    assert (ring[:, 0] >= w - 0.1).all() and (ring[:, 0] <= e).all() and (ring[:, 1] >= s).all() and (ring[:, 1] <= n).all()


def test_netcdf_subset_has_the_product_attributes(tmp_path, store):
    client = client_for(tmp_path, store)
    r = client.get("/subset.nc", params={"west": 101.0, "south": 36.0, "east": 101.2, "north": 36.1,
                                         "start": "2021-07-02", "end": "2021-07-30"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-netcdf" and "attachment" in r.headers["content-disposition"]
    path = tmp_path / "subset.nc"
    path.write_bytes(r.content)
    with xr.open_dataset(path) as sub, xr.open_dataset(store.day_path("2021-07-02")) as day:
        assert sub.sizes["time"] == 3 and sub.sizes["lat"] == 10 and sub.sizes["lon"] == 20
        assert float(sub.lat.max()) == pytest.approx(36.095) and float(sub.lon.min()) == pytest.approx(101.005)
        np.testing.assert_allclose(sub.et.values[:, 0, 0], [2.0, 3.0, 4.0])
        assert sub.et.attrs == day.et.attrs and sub.attrs["Conventions"] == day.attrs["Conventions"]
        assert list(sub.input_fingerprint.values) == [store.record(d).fingerprint
                                                      for d in ("2021-07-02", "2021-07-03", "2021-07-04")]
        assert "subset" in sub.attrs["history"]
    assert not list((store.settings.folder("cache") / "subsets").glob("*"))      # nothing left behind


def test_large_subsets_need_the_token(tmp_path, store):
    client = client_for(tmp_path, store, public_subset_cells=1000, max_subset_cells=100_000)
    params = {"west": 100.5, "south": 35.5, "east": 101.0, "north": 36.0, "start": "2021-07-01", "end": "2021-07-04"}
    r = client.get("/subset.nc", params=params)                    # 50 x 50 cells x 4 days = 10 000 > 1000
    assert r.status_code == 401 and "token" in r.text and r.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/subset.nc", params=params, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/subset.nc", params=params, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/subset.nc", params=params, headers={"X-Etfuse-Token": TOKEN}).status_code == 200
    whole = {**params, "east": 102.5, "north": 37.5}                # 40 000 cells x 4 days > max
    r = client.get("/subset.nc", params=whole, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 422 and "at most 100000" in r.text


def test_metrics_need_the_token_and_report_the_state(tmp_path, store):
    client = client_for(tmp_path, store)
    assert client.get("/timeseries", params={"lat": 36.7, "lon": 101.7, "start": "2021-07-01",
                                             "end": "2021-07-04"}).status_code == 200
    assert client.get("/metrics").status_code == 401
    text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert 'etfuse_http_requests_total{method="GET",route="/timeseries",status="200"} 1.0' in text
    assert 'etfuse_http_requests_total{method="GET",route="/metrics",status="401"} 1.0' in text
    assert 'etfuse_http_request_duration_seconds_bucket{le="0.3",route="/timeseries"} 1.0' in text
    assert 'etfuse_product_days{status="final"} 3.0' in text and 'etfuse_product_days{status="provisional"} 1.0' in text
    assert "etfuse_champion_model_version 3.0" in text and "etfuse_model_registry_up 1.0" in text
    from prometheus_client.parser import text_string_to_metric_families
    samples = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
               if not s.labels}
    assert samples["etfuse_product_newest_day_timestamp_seconds"] == pd.Timestamp("2021-07-04").timestamp()
    expected_age = (pd.Timestamp.now(tz="UTC").tz_localize(None) - pd.Timestamp("2021-07-05")).total_seconds()
    assert abs(samples["etfuse_product_age_seconds"] - expected_age) < 120
    assert samples["etfuse_product_newest_model_version"] == 4
    open_client = client_for(tmp_path, store, metrics_public=True)
    assert open_client.get("/metrics").status_code == 200


def test_metrics_count_ingest_quarantine_and_alerts(tmp_path, store):
    settings = make_settings(tmp_path)
    alerts = settings.folder("alerts")
    alerts.mkdir(parents=True, exist_ok=True)
    (alerts / "alerts.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"record": "alert", "severity": "critical", "source": "flow", "kind": "flow_failed",
         "details": {"flow": "daily"}},
        {"record": "alert", "severity": "warning", "source": "era5land", "kind": "validation_failed"},
        {"record": "digest", "severity": "warning", "source": "era5land"}]) + "\n")
    q = settings.folder("quarantine") / "modis"
    q.mkdir(parents=True)
    (q / "MOD11A1.bad.hdf").write_bytes(b"x")
    text = client_for(tmp_path, store, metrics_public=True).get("/metrics").text
    assert 'etfuse_alerts{severity="critical",source="flow"} 1.0' in text
    assert 'etfuse_flow_runs_failed_alerted{flow="daily"} 1.0' in text
    assert 'etfuse_quarantine_files{source="modis"} 1.0' in text


def test_rate_limit_per_client(tmp_path, store):
    client = client_for(tmp_path, store, rate_limit_per_minute=3)
    codes = [client.get("/days").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = client.get("/days")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "per minute" in r.text
    assert client.get("/health").status_code == 200                  # probes are never throttled


def test_day_file_download(tmp_path, store):
    client = client_for(tmp_path, store)
    r = client.get("/product/2021-07-03.nc")
    assert r.status_code == 200 and r.content == store.day_path("2021-07-03").read_bytes()
    assert client.get("/product/2021-07-09.nc").status_code == 404


def test_explorer_bundle_folder_from_settings(tmp_path, store):
    dist = tmp_path / "image-bundle"
    dist.mkdir()
    (dist / "index.html").write_text("<html>from the image stage</html>")
    client = client_for(tmp_path, store, explorer_dist=str(dist))
    assert client.get("/").text == "<html>from the image stage</html>"


def test_grafana_dashboard_uses_metrics_the_api_exports(tmp_path, store):
    """Every metric the provisioned dashboard plots is exported (the Prefect ones only with prefect.api_url)."""
    import re
    from pathlib import Path
    dashboard = Path(__file__).resolve().parents[2] / "infra" / "monitoring" / "grafana" / "dashboards" / \
        "etfuse-overview.json"
    exprs = [t["expr"] for panel in json.loads(dashboard.read_text())["panels"] for t in panel["targets"]]
    used = {re.sub(r"_(bucket|total)$", "", name) for e in exprs for name in re.findall(r"etfuse_[a-z_]+", e)}
    client = client_for(tmp_path, store, metrics_public=True)
    client.get("/days")
    text = client.get("/metrics").text
    exported = set(re.findall(r"^# TYPE (etfuse_[a-z_]+) ", text, flags=re.M))
    exported = {re.sub(r"_total$", "", name) for name in exported}
    assert used - exported <= {"etfuse_flow_runs"}, used - exported
    assert {"etfuse_product_age_seconds", "etfuse_http_request_duration_seconds", "etfuse_http_requests"} <= used
