"""Prometheus metrics of the API process: requests, and the state of the system read at scrape time.

Two kinds of numbers:

* **Request metrics** (counted by the :class:`RequestMetrics` middleware): requests by route
  template, method and status; latency histograms by route template.  The route template
  (``/overlay/{day}.png``), never the raw path, is the label, so the label set stays bounded.
* **State metrics** (:class:`StateCollector`, read when Prometheus scrapes, cached for
  ``STATE_TTL_S``): product days by status, the newest day and its age (freshness), the champion
  model version, harmonised-store deliveries by source and outcome (ingest), files in quarantine,
  alerts by severity and failed flow runs (from the alert log), and flow runs by state from the
  Prefect server when ``prefect.api_url`` is set.

Each API process has its own registry (tests create many apps); with several uvicorn workers each
worker answers for its own request counters (docs/product.md says how to scrape them).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from etfuse.quarantine import quarantined
from etfuse.settings import Settings
from etfuse.store_ledger import delivery_counts

log = logging.getLogger(__name__)

#: latency buckets [s]: the point/area target is p99 <= 0.3 s
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)
#: state read at most this often [s]: a scrape every 15 s must not re-read ledgers each time
STATE_TTL_S = 30.0
FLOW_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED", "RUNNING", "SCHEDULED")


class RequestMetrics:
    """Pure ASGI middleware counting requests and their latency by route template."""

    def __init__(self, app, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("etfuse_http_requests", "HTTP requests by route template, method and status",
                                ["route", "method", "status"], registry=registry)
        self.latency = Histogram("etfuse_http_request_duration_seconds", "HTTP request latency [s] by route template",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=registry)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_status(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.requests.labels(template, scope.get("method", ""), str(status["code"])).inc()
            self.latency.labels(template).observe(time.perf_counter() - start)


def _prefect_flow_runs(api_url: str) -> dict[str, int]:
    """Flow runs by state type from a Prefect server (``POST /flow_runs/count``)."""
    import httpx
    out = {}
    with httpx.Client(base_url=api_url.rstrip("/"), timeout=3.0) as client:
        for state in FLOW_STATES:
            r = client.post("/flow_runs/count", json={"flow_runs": {"state": {"type": {"any_": [state]}}}})
            r.raise_for_status()
            out[state] = int(r.json())
    return out


class StateCollector:
    """Reads the system's state at scrape time (see the module docstring); cached ``STATE_TTL_S``."""

    def __init__(self, settings: Settings, product, registry=None) -> None:
        self.settings, self.product, self.model_registry = settings, product, registry
        self._cache: tuple[float, list] | None = None
        self._lock = threading.Lock()

    def collect(self):
        with self._lock:
            if self._cache is None or time.monotonic() - self._cache[0] > STATE_TTL_S:
                self._cache = (time.monotonic(), list(self._read()))
            return list(self._cache[1])

    def _read(self):
        yield from self._product()
        yield from self._champion()
        yield from self._ingest()
        yield from self._alerts()
        yield from self._flows()

    def _product(self):
        records = self.product.records()
        days = GaugeMetricFamily("etfuse_product_days", "product days by status", labels=["status"])
        for status in ("provisional", "final"):
            days.add_metric([status], sum(r.status == status for r in records))
        yield days
        newest = GaugeMetricFamily("etfuse_product_newest_day_timestamp_seconds",
                                   "start (00 UTC) of the newest product day [s since 1970]")
        age = GaugeMetricFamily("etfuse_product_age_seconds",
                                "time since the end (24 UTC) of the newest product day [s]: product freshness")
        written = GaugeMetricFamily("etfuse_product_last_written_timestamp_seconds",
                                    "when a product day was last written [s since 1970]")
        version = GaugeMetricFamily("etfuse_product_newest_model_version", "model version of the newest product day")
        if records:
            last = records[-1]
            newest.add_metric([], last.day.timestamp())
            end = last.day + pd.Timedelta(days=1)
            age.add_metric([], (pd.Timestamp.now(tz="UTC").tz_localize(None) - end).total_seconds())
            written.add_metric([], max(r.written_at for r in records).timestamp())
            version.add_metric([], last.model_version)
        yield from (newest, age, written, version)

    def _champion(self):
        family = GaugeMetricFamily("etfuse_champion_model_version",
                                   "version of the registry's champion model (absent when unknown)")
        up = GaugeMetricFamily("etfuse_model_registry_up", "1 when the model registry answered the last scrape")
        if self.model_registry is not None:
            try:
                info = self.model_registry.champion()
                if info is not None:
                    family.add_metric([], info.version)
                up.add_metric([], 1)
            except Exception as exc:  # noqa: BLE001 - a scrape reports, never fails
                log.warning("metrics: model registry unreachable: %s", exc)
                up.add_metric([], 0)
        yield family
        yield up

    def _ingest(self):
        deliveries = GaugeMetricFamily("etfuse_ingest_deliveries", "delivered files by source and outcome",
                                       labels=["source", "status"])
        for source, status, n in delivery_counts(self.settings.folder("harmonised"), self.settings.ledger.url):
            deliveries.add_metric([source, status], n)
        yield deliveries
        quarantine = GaugeMetricFamily("etfuse_quarantine_files", "files in quarantine by source", labels=["source"])
        counts: dict[str, int] = {}
        if Path(self.settings.folder("quarantine")).exists():
            for item in quarantined(self.settings):
                counts[item["source"]] = counts.get(item["source"], 0) + 1
        for source, n in sorted(counts.items()):
            quarantine.add_metric([source], n)
        yield quarantine

    def _alerts(self):
        alerts = GaugeMetricFamily("etfuse_alerts", "alerts in the alert log by severity and source",
                                   labels=["severity", "source"])
        failed = GaugeMetricFamily("etfuse_flow_runs_failed_alerted", "failed or crashed flow runs (alert log) by flow",
                                   labels=["flow"])
        log_path = Path(self.settings.folder("alerts")) / "alerts.jsonl"
        counts: dict[tuple[str, str], int] = {}
        flows: dict[str, int] = {}
        if log_path.exists():
            for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("record") != "alert":
                    continue
                key = (str(record.get("severity", "")), str(record.get("source", "")))
                counts[key] = counts.get(key, 0) + 1
                if record.get("kind") == "flow_failed":
                    flow = str((record.get("details") or {}).get("flow", "unknown"))
                    flows[flow] = flows.get(flow, 0) + 1
        for (severity, source), n in sorted(counts.items()):
            alerts.add_metric([severity, source], n)
        for flow, n in sorted(flows.items()):
            failed.add_metric([flow], n)
        yield alerts
        yield failed

    def _flows(self):
        api_url = self.settings.prefect.api_url
        if not api_url:
            return
        runs = GaugeMetricFamily("etfuse_flow_runs", "flow runs on the Prefect server by state", labels=["state"])
        up = GaugeMetricFamily("etfuse_prefect_up", "1 when the Prefect server answered the last scrape")
        try:
            for state, n in _prefect_flow_runs(api_url).items():
                runs.add_metric([state], n)
            up.add_metric([], 1)
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics: Prefect server %s unreachable: %s", api_url, exc)
            up.add_metric([], 0)
        yield runs
        yield up


def make_registry(settings: Settings, product, model_registry=None) -> CollectorRegistry:
    """A fresh registry holding the state collector (the request middleware adds its own metrics)."""
    # auto_describe off: registering must not read the state (the product ledger, the alert log, a
    # Prefect server that may be down) when the API starts; the state is read at scrape time only.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(settings, product, model_registry))
    return registry
