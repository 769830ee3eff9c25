"""Freshness with a frozen clock: overdue sources alerted once per window, a stale product in /ready,
and the dead-man's-switch ping against a loopback receiver."""

from __future__ import annotations

import datetime as dt
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from etfuse.alerts import AlertDispatcher, read_alert_log
from etfuse.freshness import age_days, check_overdue, ping_heartbeat, product_staleness, source_freshness
from etfuse.store import HarmonisedStore

UTC = dt.timezone.utc


def _day(store: HarmonisedStore, source: str, day: str) -> None:
    ds = xr.Dataset({"et": (("time", "lat", "lon"), np.ones((1, 2, 2), np.float32))},
                    coords={"time": [pd.Timestamp(day)], "lat": [36.0, 35.9], "lon": [101.0, 101.1]})
    store.put_grid(source, ds)


def test_age_is_counted_from_the_end_of_the_data_day():
    assert age_days(pd.Timestamp("2024-05-01"), dt.datetime(2024, 5, 2, 12, tzinfo=UTC)) == pytest.approx(0.5)


def test_overdue_source_alerted_once_per_window(settings):
    store = HarmonisedStore(settings.harmonised)
    _day(store, "era5land", "2024-05-01")
    _day(store, "modis", "2024-05-07")
    dispatcher = AlertDispatcher(settings)
    on_time = dt.datetime(2024, 5, 7, 0, tzinfo=UTC)             # era5land 5 days old (allowed 6)
    assert check_overdue(store, settings, dispatcher, now=on_time) == []
    late = dt.datetime(2024, 5, 9, 6, tzinfo=UTC)                  # era5land 7.25 days, modis 1.25 (allowed 3)
    by_source = {f.source: f for f in source_freshness(store, settings, late)}
    assert by_source["era5land"].overdue and not by_source["modis"].overdue
    assert by_source["cma"].newest_day is None and not by_source["cma"].overdue   # never delivered: not measured
    sent = check_overdue(store, settings, dispatcher, now=late)
    assert [(a.source, a.kind, a.severity) for a in sent] == [("era5land", "overdue", "warning")]
    assert "7.2 days" in sent[0].summary and "allowed 6" in sent[0].summary
    # later runs inside the window: nothing; after the window: once more
    assert check_overdue(store, settings, dispatcher, now=late + dt.timedelta(hours=6)) == []
    assert check_overdue(store, settings, dispatcher, now=late + dt.timedelta(hours=23)) == []
    again = check_overdue(store, settings, dispatcher, now=late + dt.timedelta(hours=24))
    assert [a.source for a in again] == ["era5land"]
    # the source catches up: the condition is forgotten, a new lapse alerts at once
    _day(store, "era5land", "2024-05-08")
    assert check_overdue(store, settings, dispatcher, now=late + dt.timedelta(hours=25)) == []
    lapse = dt.datetime(2024, 5, 16, tzinfo=UTC)
    assert {a.source for a in check_overdue(store, settings, dispatcher, now=lapse)} == {"era5land", "modis"}
    dispatcher.flush(force=True)
    logged = [r for r in read_alert_log(settings) if r.get("kind") == "overdue" and r.get("record") == "alert"]
    assert len(logged) == 4


def test_product_staleness(settings):
    now = dt.datetime(2024, 5, 20, tzinfo=UTC)
    fresh = product_staleness([pd.Timestamp("2024-05-15")], settings, now)
    assert fresh == {"newest_day": "2024-05-15", "age_days": 4.0, "allowed_days": 7.0, "stale": False}
    stale = product_staleness([pd.Timestamp("2024-05-01"), pd.Timestamp("2024-05-11")], settings, now)
    assert stale["stale"] and stale["age_days"] == 8.0
    assert product_staleness([], settings, now)["stale"]


def test_ready_reports_a_stale_product(settings, monkeypatch):
    from fastapi.testclient import TestClient

    import etfuse.freshness
    from serving.api import create_app

    class Product:
        def days(self):
            return [pd.Timestamp("2024-05-10")]

    monkeypatch.setattr(etfuse.freshness, "utcnow", lambda: dt.datetime(2024, 5, 12, tzinfo=UTC))
    client = TestClient(create_app(settings, product=Product()))
    body = client.get("/ready").json()
    assert body["ready"] and body["stale"] is False and body["product"]["newest_day"] == "2024-05-10"
    monkeypatch.setattr(etfuse.freshness, "utcnow", lambda: dt.datetime(2024, 5, 30, tzinfo=UTC))
    response = client.get("/ready")
    assert response.status_code == 200                     # the old days still serve
    assert response.json()["stale"] is True and response.json()["product"]["age_days"] == 19.0


class _Receiver(BaseHTTPRequestHandler):
    status = 200
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server API
        type(self).hits.append(self.path)
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    handler = type("Receiver", (_Receiver,), {"hits": [], "status": 200})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def test_heartbeat_ping(settings, receiver):
    server, handler = receiver
    assert ping_heartbeat(settings) is None                     # not configured: no ping
    url = f"http://127.0.0.1:{server.server_port}/ping/abc123"
    s = settings.model_copy(update={"freshness": settings.freshness.model_copy(update={
        "heartbeat_url": url, "heartbeat_retries": 2, "heartbeat_backoff_s": 0.0})})
    assert ping_heartbeat(s) is True and handler.hits == ["/ping/abc123"]
    handler.status = 500
    assert ping_heartbeat(s) is False and len(handler.hits) == 1 + 3   # 1 + retries attempts
