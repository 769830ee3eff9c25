"""Shared fixtures: settings on a temporary ETFUSE_HOME, the real sample files, a small world."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

for _key, _value in {"ORT_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                     "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}.items():
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parents[1]


def realdata_dir() -> Path:
    return Path(os.environ.get("ETFUSE_REALDATA", REPO.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    path = realdata_dir()
    if not path.is_dir():
        pytest.skip(f"real provider samples not present at {path} (set ETFUSE_REALDATA to their folder)")
    return path


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Settings for the test region on a fresh ETFUSE_HOME, with no config file or ETFUSE_* leaking in."""
    for key in list(os.environ):
        if key.startswith("ETFUSE_") and key != "ETFUSE_REALDATA":
            monkeypatch.delenv(key)
    from etfuse.settings import load_settings
    return load_settings(home=tmp_path / "home", region="test")


#: a small world: 1 x 1 deg inside the test region at 0.02 deg, 40 days across a month boundary
SMALL_WORLD = dict(bbox=(101.0, 36.0, 102.0, 37.0), start="2021-06-10", end="2021-07-19", resolution_deg=0.02,
                   seed=7, margin_deg=0.3)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    from etfuse.synth.world import WorldSpec, generate
    out = tmp_path_factory.mktemp("world")
    generate(out, WorldSpec(**SMALL_WORLD))
    return out


@pytest.fixture
def small_settings(tmp_path, monkeypatch):
    """Settings whose region is the small world's bbox."""
    for key in list(os.environ):
        if key.startswith("ETFUSE_") and key != "ETFUSE_REALDATA":
            monkeypatch.delenv(key)
    from etfuse.settings import load_settings
    w, s, e, n = SMALL_WORLD["bbox"]
    return load_settings(home=tmp_path / "home", region={"name": "small", "lon_min": w, "lon_max": e, "lat_min": s,
                                                          "lat_max": n, "resolution_deg": SMALL_WORLD["resolution_deg"],
                                                          "margin_deg": SMALL_WORLD["margin_deg"]})
