"""Fixtures of the fetch tests: a real SFTP server (asyncssh) and a real HTTP server on loopback,
both with injectable faults, and settings pointing the pull plug-ins at them."""

from __future__ import annotations

import asyncio
import json

import pytest

from etfuse.fetch.sftpserver import LocalSftpServer
from etfuse.settings import load_settings
from tests.etfuse.fetch.servers import Faults, HttpServer

USER, PASSWORD = "etfuse", "s3cret-pw"
FAST = {"retries": 2, "backoff_s": 0.01, "timeout_s": 1.5}


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def upstream(tmp_path):
    root = tmp_path / "upstream"
    root.mkdir()
    return root


@pytest.fixture
def sftp(upstream, tmp_path, faults, monkeypatch):
    """An SFTP server serving ``upstream``; GLEAM and remote logins set in the environment."""

    async def hook(server, path, offset, size):
        name = path.rsplit("/", 1)[-1]
        if name in faults.stall:
            for _ in range(400):
                if faults.release.is_set():
                    break
                await asyncio.sleep(0.05)
            return b""
        length = (upstream / path.lstrip("/")).stat().st_size
        if faults.cut.get(name, 0) > 0 and offset >= length // 2:
            faults.cut[name] -= 1
            server.abort()
            return b""
        if name in faults.truncate and offset >= length // 2:
            return b""
        return None

    for prefix in ("GLEAM_SFTP", "ETFUSE_REMOTE"):
        monkeypatch.setenv(f"{prefix}_USERNAME", USER)
        monkeypatch.setenv(f"{prefix}_PASSWORD", PASSWORD)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with LocalSftpServer(upstream, USER, PASSWORD, tmp_path / "sftp-state", read_hook=hook) as server:
        yield server
    faults.release.set()


@pytest.fixture
def http(upstream, faults, monkeypatch):
    monkeypatch.setenv("ETFUSE_REMOTE_USERNAME", USER)
    monkeypatch.setenv("ETFUSE_REMOTE_PASSWORD", PASSWORD)
    with HttpServer(upstream, faults, user=USER, password=PASSWORD) as server:
        yield server


def make_settings(tmp_path, monkeypatch, **fetch):
    for key in [k for k in __import__("os").environ if k.startswith("ETFUSE_") and not k.startswith("ETFUSE_REMOTE")
                and k != "ETFUSE_REALDATA"]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)                    # no stray ./.env
    return load_settings(home=tmp_path / "home", region="test",
                         fetch={"block_bytes": 32 * 1024, "env_file": str(tmp_path / "none.env"), **fetch})


def landing_names(settings, target: str) -> list[str]:
    folder = settings.folder("landing") / target
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def alerts(settings) -> list[dict]:
    path = settings.folder("alerts") / "alerts.jsonl"
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("record") == "alert"]
