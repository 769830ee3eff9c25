"""The fetch flow, its deployments and `etfuse fetch`, against a real local SFTP server."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from etfuse.fetch.sftpserver import LocalSftpServer
from etfuse.settings import load_settings
from flows.cli import app

USER, PASSWORD = "demo", "pw-9f2c"


@pytest.fixture
def served(tmp_path, monkeypatch):
    root = tmp_path / "upstream"
    (root / "data/v3.7a/daily/2021").mkdir(parents=True)
    (root / "data/v3.7a/daily/2021/E_2021_GLEAM_v3.7a.nc").write_bytes(b"\x89HDF\r\n\x1a\n" + b"g" * 200_000)
    (root / "drop").mkdir()
    (root / "drop/evp_202101.txt").write_text("station data\n")
    for key in [k for k in __import__("os").environ if k.startswith("ETFUSE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.chdir(tmp_path)
    with LocalSftpServer(root, USER, PASSWORD, tmp_path / "state") as server:
        env_file = tmp_path / "fetch.env"
        env_file.write_text(f"GLEAM_SFTP_USERNAME={USER}\nGLEAM_SFTP_PASSWORD={PASSWORD}\n"
                            f"ETFUSE_REMOTE_USERNAME={USER}\nETFUSE_REMOTE_PASSWORD={PASSWORD}\n")
        config = tmp_path / "etfuse.yaml"
        common = {"known_hosts": str(server.known_hosts), "retries": 0, "timeout_s": 5}
        config.write_text(json.dumps({
            "home": str(tmp_path / "home"), "region": "test",
            "fetch": {"env_file": str(env_file),
                      "gleam": {"enabled": True, "url": server.url, "cron": "0 7 * * 1", **common},
                      "remote": {"enabled": True, "url": f"{server.url}/drop", "pattern": "evp_*.txt", "target": "cma",
                                 "cron": "15 * * * *", **common}}}))
        yield config, server


def test_cli_dry_run_then_fetch_then_nothing_new(served):
    config, server = served
    runner = CliRunner()
    dry = runner.invoke(app, ["-c", str(config), "fetch", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would fetch  gleam: sftp://127.0.0.1" in dry.output and "landing/cma/evp_202101.txt" in dry.output
    settings = load_settings(config)
    assert not (settings.folder("landing") / "gleam").exists()

    done = runner.invoke(app, ["-c", str(config), "fetch"])
    assert done.exit_code == 0, done.output
    assert "fetch gleam: 1 new file(s)" in done.output and "fetch remote: 1 new file(s)" in done.output
    assert (settings.folder("landing") / "gleam" / "E_2021_GLEAM_v3.7a.nc").stat().st_size == 200_008
    assert PASSWORD not in done.output

    again = runner.invoke(app, ["-c", str(config), "fetch", "gleam"])
    assert again.exit_code == 0 and "fetch gleam: 0 new file(s)" in again.output


def test_cli_exit_codes(served, tmp_path):
    config, server = served
    (tmp_path / "fetch.env").write_text(f"GLEAM_SFTP_USERNAME={USER}\nGLEAM_SFTP_PASSWORD=wrong\n")
    runner = CliRunner()
    wrong = runner.invoke(app, ["-c", str(config), "fetch", "gleam"])
    assert wrong.exit_code == 2 and "FAILED" in wrong.output and "user name and password" in wrong.output
    assert "wrong" not in wrong.output.replace("wrong user name", "")
    bad_day = runner.invoke(app, ["-c", str(config), "fetch", "--since", "2021-13-01"])
    assert bad_day.exit_code == 2


def test_fetch_deployments_one_per_enabled_source(served):
    config, _ = served
    from flows.deployments import _specs
    specs = {name: (cron, params) for name, _, cron, params in _specs(load_settings(config), str(config))}
    assert specs["fetch-gleam"] == ("0 7 * * 1", {"config": str(config), "sources": ["gleam"]})
    assert specs["fetch-remote"] == ("15 * * * *", {"config": str(config), "sources": ["remote"]})
    assert "fetch-era5land" not in specs and "fetch-modis" not in specs


def test_fetch_flow_under_prefect(served, prefect_harness):
    config, _ = served
    from flows.fetch import fetch_flow
    result = fetch_flow(sources=["gleam"], config=str(config))
    assert [len(s["fetched"]) for s in result["sources"]] == [1]
    settings = load_settings(config)
    assert (settings.folder("landing") / "gleam" / "E_2021_GLEAM_v3.7a.nc").exists()
    assert fetch_flow(sources=["gleam"], config=str(config))["sources"][0]["fetched"] == []
