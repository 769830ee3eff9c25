"""The monitoring profile for real: Prometheus scrapes the API's /metrics with the token, and every
PromQL expression of the provisioned Grafana dashboard runs on what it scraped.

Prometheus is the image of infra/docker/Dockerfile.prometheus (Debian's package) when the Docker
engine runs and the image is built (``docker build --network host --build-arg
DEBIAN_IMAGE=local/debian:bookworm -f infra/docker/Dockerfile.prometheus -t etfuse-prometheus:2.42 .``),
else a ``prometheus`` binary on PATH (Debian: ``apt-get install --no-install-recommends prometheus``);
``$ETFUSE_PROMETHEUS`` (a binary) wins over both.  Skipped with the reason when there is neither.  The API runs in this
process (uvicorn on loopback), its product is a small test product, and the scrape configuration is
infra/monitoring/prometheus.yml with only the targets (and the scrape interval) changed.  Grafana
itself cannot run here (docs/deployment.md, "Monitoring"): its files are checked in
tests/serving/test_distribution_api.py and below.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from tests.services import free_port, served_app, wait_http

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "infra" / "monitoring"
IMAGE = "etfuse-prometheus:2.42"
TOKEN = "scrape-token-for-tests"
#: dashboard series that stay empty here: flow runs need a Prefect server (prefect.api_url), ingest
#: deliveries a harmonised store with deliveries, alerts (and alerted failed runs) an alert log, and
#: the 5xx rate a server error (the counter has no 5xx series)
EMPTY_HERE = ("etfuse_flow_runs", "etfuse_ingest_deliveries", "etfuse_alerts", 'status=~"5.."')


def docker_image_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, timeout=60)
    return probe.returncode == 0


def host_binary() -> str | None:
    return os.environ.get("ETFUSE_PROMETHEUS") or shutil.which("prometheus")


@pytest.fixture
def api(tmp_path):
    """The API on loopback over a 3-day product, /metrics behind the token."""

    from etfuse.settings import load_settings
    from serving.api import create_app
    from serving.product import ProductStore
    from tests.standins import FakeRegistry

    settings = load_settings(home=tmp_path / "home", region="test",
                             serving={"quicklooks": False, "admin_token": TOKEN},
                             distribution={"rate_limit_per_minute": 0, "stac": False, "render_lane": "thread"})
    store = ProductStore(settings)
    for k, day in enumerate(pd.date_range("2021-07-01", "2021-07-03")):
        store.write_day(day, np.full(store.grid.shape, 1.0 + k, np.float32), model_version=3,
                        status="final" if k < 2 else "provisional", sources_used={"era5land", "gleam"},
                        fingerprint=hashlib.sha256(f"p{k}".encode()).hexdigest())
    with served_app(create_app(settings, product=store, registry=FakeRegistry())) as url:
        yield url


def scrape_config(folder: Path, target: str, secrets_dir: str) -> Path:
    """infra/monitoring/prometheus.yml with the local API as target, scraped every second."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    (job,) = config["scrape_configs"]
    assert job["authorization"]["credentials_file"] == "/etc/prometheus/secrets/etfuse_api_token"
    job["authorization"]["credentials_file"] = f"{secrets_dir}/etfuse_api_token"
    job["static_configs"] = [{"targets": [target]}]
    (folder / "secrets").mkdir(parents=True)
    (folder / "secrets" / "etfuse_api_token").write_text(TOKEN + "\n")
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    for p in (folder, folder / "secrets"):           # the image runs as the prometheus user
        p.chmod(0o755)
    for p in (path, folder / "secrets" / "etfuse_api_token"):
        p.chmod(0o644)
    return path


@pytest.fixture
def prometheus(tmp_path, api):
    """Prometheus scraping ``api``: (its URL, how it runs)."""
    port = free_port()
    folder = tmp_path / "prometheus"
    target = api.removeprefix("http://")
    listen = f"127.0.0.1:{port}"
    if not os.environ.get("ETFUSE_PROMETHEUS") and docker_image_ready():
        scrape_config(folder, target, "/etc/prometheus/secrets")
        run = subprocess.run(["docker", "run", "-d", "--rm", "--network", "host", "-v", f"{folder}:/etc/prometheus:ro",
                              IMAGE, "--config.file=/etc/prometheus/prometheus.yml",
                              "--storage.tsdb.path=/prometheus", f"--web.listen-address={listen}"],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        container = run.stdout.strip()
        try:
            wait_http(f"http://{listen}/-/ready", timeout=60)
            yield f"http://{listen}", f"the {IMAGE} image"
        finally:
            logs = subprocess.run(["docker", "logs", "--tail", "20", container], capture_output=True, text=True,
                                  timeout=60)
            print(logs.stdout[-3000:], logs.stderr[-3000:])
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, timeout=120)
        return
    binary = host_binary()
    if binary is None:
        pytest.skip(f"neither the {IMAGE} image (a running Docker engine) nor a prometheus binary "
                    "(apt-get install prometheus, or ETFUSE_PROMETHEUS) is available")
    config = scrape_config(folder, target, str(folder / "secrets"))
    log = tmp_path / "prometheus.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address={listen}"], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_http(f"http://{listen}/-/ready", timeout=60, proc=proc, log=log)
        yield f"http://{listen}", f"the binary {binary}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def query(prom: str, expr: str) -> dict:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=30)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]


def test_prometheus_scrapes_the_api_and_the_dashboard_queries_run(api, prometheus):
    prom, how = prometheus
    for _ in range(5):                                  # some requests for the request metrics
        assert httpx.get(api + "/days", timeout=30).status_code == 200
    assert httpx.get(api + "/metrics", timeout=30).status_code == 401      # the scrape below needs the token
    deadline = time.monotonic() + 60
    up = days = []
    while time.monotonic() < deadline:
        up = query(prom, 'up{job="etfuse-api"}')["result"]
        days = query(prom, "etfuse_product_days")["result"]
        if up and up[0]["value"][1] == "1" and days:
            break
        time.sleep(1)
    assert up and up[0]["value"][1] == "1", f"Prometheus ({how}) did not scrape the API: {up}"
    assert {d["metric"]["status"]: float(d["value"][1]) for d in days} == {"final": 2.0, "provisional": 1.0}
    targets = httpx.get(f"{prom}/api/v1/targets", timeout=30).json()["data"]["activeTargets"]
    assert [t["health"] for t in targets] == ["up"] and targets[0]["scrapeUrl"] == api + "/metrics"
    requests = query(prom, 'etfuse_http_requests_total{route="/days"}')["result"]
    assert requests and sum(float(r["value"][1]) for r in requests) >= 5

    time.sleep(3)                                       # two scrapes at least: rate() has something
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "etfuse-overview.json").read_text())
    empty = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            result = query(prom, target["expr"])["result"]
            if not result:
                empty.append(target["expr"])
    assert all(any(name in expr for name in EMPTY_HERE) for expr in empty), \
        f"dashboard queries without data from a scraped API: {empty}"
    assert len(empty) < sum(len(p["targets"]) for p in dashboard["panels"]) / 2


def test_grafana_provisioning_points_at_the_prometheus_service_and_the_dashboard_folder():
    """Grafana cannot run here; its provisioning is checked against compose and the dashboard."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    datasources = yaml.safe_load((MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    providers = yaml.safe_load((MONITORING / "grafana" / "provisioning" / "dashboards" / "etfuse.yml").read_text())
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "etfuse-overview.json").read_text())
    assert datasources["apiVersion"] == 1 and providers["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert "--web.listen-address=:9090" in compose["prometheus"]["command"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["grafana"]["volumes"]}
    (provider,) = providers["providers"]
    assert mounts[provider["options"]["path"]] == "./infra/monitoring/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./infra/monitoring/grafana/provisioning"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] and dashboard["title"]
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
    # the compose service runs the image built from Dockerfile.prometheus
    assert compose["prometheus"]["build"]["dockerfile"] == "infra/docker/Dockerfile.prometheus"
    assert compose["prometheus"]["image"].endswith(f"{IMAGE}}}")
