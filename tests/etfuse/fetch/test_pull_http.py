"""``remote`` against a real HTTP server (http.server) on loopback: a directory listing with
basic auth, and faults."""

from __future__ import annotations

import time

from etfuse.fetch.ledger import FetchLedger
from etfuse.fetch.run import run_fetch
from tests.etfuse.fetch.conftest import FAST, alerts, landing_names, make_settings
from tests.etfuse.fetch.servers import make_files

NAMES = ["evp_202101.txt", "evp_202102.txt"]


def http_settings(tmp_path, monkeypatch, server, **extra):
    return make_settings(tmp_path, monkeypatch, remote={"enabled": True, "url": f"{server.url}/drop/",
                                                        "pattern": "evp_*.txt", "target": "cma", **FAST, **extra})


def test_http_listing_fetched_once(tmp_path, monkeypatch, upstream, http, faults):
    data = make_files(upstream / "drop", NAMES + ["other.bin"])
    settings = http_settings(tmp_path, monkeypatch, http)
    report = run_fetch(settings, ["remote"])
    assert report.sources[0].error is None
    assert landing_names(settings, "cma") == NAMES
    for name in NAMES:
        assert (settings.folder("landing") / "cma" / name).read_bytes() == data[name]
    rows = FetchLedger.of(settings).rows("remote")
    assert sorted(r.origin for r in rows) == [f"{http.url}/drop/{n}" for n in NAMES]
    gets = len(faults.gets)
    assert run_fetch(settings, ["remote"]).sources[0].planned == []
    assert len(faults.gets) == gets                                   # nothing downloaded again


def test_http_connection_cut_is_retried(tmp_path, monkeypatch, upstream, http, faults):
    data = make_files(upstream / "drop", NAMES[:1])
    faults.cut[NAMES[0]] = 1
    settings = http_settings(tmp_path, monkeypatch, http)
    report = run_fetch(settings, ["remote"])
    assert report.sources[0].error is None, report.sources[0].error
    assert faults.cut[NAMES[0]] == 0 and faults.gets.count(NAMES[0]) == 2
    assert (settings.folder("landing") / "cma" / NAMES[0]).read_bytes() == data[NAMES[0]]
    assert landing_names(settings, "cma") == NAMES[:1]


def test_http_truncated_body_never_reaches_landing(tmp_path, monkeypatch, upstream, http, faults):
    make_files(upstream / "drop", NAMES[:1])
    faults.truncate.add(NAMES[0])
    settings = http_settings(tmp_path, monkeypatch, http)
    report = run_fetch(settings, ["remote"])
    assert report.sources[0].error_kind == "transfer_failed"
    assert faults.gets.count(NAMES[0]) == 1 + FAST["retries"]
    assert [n for n in landing_names(settings, "cma") if not n.startswith(".")] == []
    assert FetchLedger.of(settings).rows("remote") == []
    assert alerts(settings)[0]["kind"] == "fetch_failed"


def test_http_wrong_credentials(tmp_path, monkeypatch, upstream, http):
    make_files(upstream / "drop", NAMES[:1])
    monkeypatch.setenv("ETFUSE_REMOTE_PASSWORD", "nope-nope")
    settings = http_settings(tmp_path, monkeypatch, http)
    report = run_fetch(settings, ["remote"])
    assert report.sources[0].error_kind == "credentials" and "401" in report.sources[0].error
    assert "nope-nope" not in str(report.to_json()) + (settings.folder("alerts") / "alerts.jsonl").read_text()


def test_http_stall_times_out(tmp_path, monkeypatch, upstream, http, faults):
    make_files(upstream / "drop", NAMES[:1])
    faults.stall.add(NAMES[0])
    settings = http_settings(tmp_path, monkeypatch, http, retries=1, timeout_s=0.5)
    t0 = time.monotonic()
    report = run_fetch(settings, ["remote"])
    assert time.monotonic() - t0 < 15
    assert report.sources[0].error_kind == "transfer_failed" and "stalled" in report.sources[0].error
    assert [n for n in landing_names(settings, "cma") if not n.startswith(".")] == []


def test_provider_down(tmp_path, monkeypatch):
    from tests.services import free_port
    settings = make_settings(tmp_path, monkeypatch, remote={"enabled": True, "url": f"http://127.0.0.1:{free_port()}/x/",
                                                            **FAST})
    report = run_fetch(settings, ["remote"])
    assert report.sources[0].error_kind == "provider_down"


def test_file_url_mirror(tmp_path, monkeypatch, upstream):
    """Any fsspec URL: a mounted mirror as file://, with a resumable partial."""
    data = make_files(upstream / "mirror", ["evp_202103.txt"])
    settings = make_settings(tmp_path, monkeypatch, remote={"enabled": True, "url": (upstream / "mirror").as_uri(),
                                                            "pattern": "evp_*.txt", **FAST})
    report = run_fetch(settings, ["remote"])
    assert report.sources[0].error is None
    row, = report.sources[0].fetched
    assert row.origin == (upstream / "mirror" / "evp_202103.txt").as_uri()
    assert (settings.folder("landing") / "cma" / "evp_202103.txt").read_bytes() == data["evp_202103.txt"]
    assert (upstream / "mirror" / "evp_202103.txt").exists()                   # never moved or deleted upstream
