"""Shared fixtures: settings on a temporary ETFUSE_HOME, the real sample files, a small world."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

for _key, _value in {"ORT_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                     "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                     "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}.items():
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parents[1]


def realdata_dir() -> Path:
    return Path(os.environ.get("ETFUSE_REALDATA", REPO.parent / "shared" / "realdata"))


def realdata_file(*parts: str) -> Path:
    """A real provider sample under ../shared/realdata (or ETFUSE_REALDATA); skips when it is absent."""
    path = realdata_dir().joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"real provider sample not present: {path} (set ETFUSE_REALDATA to the realdata folder)")
    return path


def _clear_etfuse_environment(monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith("ETFUSE_") and k != "ETFUSE_REALDATA"]:
        monkeypatch.delenv(key)


@pytest.fixture
def clean_environment(monkeypatch):
    """Default settings only: no ETFUSE_* variable (other than ETFUSE_REALDATA) leaks into load_settings()."""
    _clear_etfuse_environment(monkeypatch)


@pytest.fixture(scope="session")
def realdata() -> Path:
    path = realdata_dir()
    if not path.is_dir():
        pytest.skip(f"real provider samples not present at {path} (set ETFUSE_REALDATA to their folder)")
    return path


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Settings for the test region on a fresh ETFUSE_HOME, with no config file or ETFUSE_* leaking in."""
    _clear_etfuse_environment(monkeypatch)
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
    _clear_etfuse_environment(monkeypatch)
    from etfuse.settings import load_settings
    w, s, e, n = SMALL_WORLD["bbox"]
    return load_settings(home=tmp_path / "home", region={"name": "small", "lon_min": w, "lon_max": e, "lat_min": s,
                                                          "lat_max": n, "resolution_deg": SMALL_WORLD["resolution_deg"],
                                                          "margin_deg": SMALL_WORLD["margin_deg"]})


@pytest.fixture(scope="session")
def two_year_store(tmp_path_factory):
    """A two-year synthetic world over the test region, harmonised into a store (slow: ~90 s).

    Returns (settings, world folder).  Harmonised directly (no validation) to keep it quick; the
    ingest path has its own tests.
    """
    from etfuse.harmonise import harmonise_into_store
    from etfuse.settings import load_settings
    from etfuse.store import HarmonisedStore
    from etfuse.synth.world import WorldSpec, generate
    home = tmp_path_factory.mktemp("two_years")
    world = home / "world"
    settings = load_settings(home=home, region="test", static={"elevation_file": str(world / "static" / "elevation.nc")})
    generate(world, WorldSpec(bbox=settings.region.bbox, start="2020-01-01", end="2021-12-31", seed=1))
    store = HarmonisedStore(settings.harmonised)
    for source in ("era5land", "gleam", "modis", "cma", "stations"):
        for path in sorted((world / "landing" / source).glob("*")):
            harmonise_into_store(source, path, store, settings=settings)
    return settings, world


@pytest.fixture(scope="session")
def ledger_postgres():
    """A real PostgreSQL 15 cluster on loopback for the ledgers (one per session); its URL.
    Skipped, with the reason, when the binaries are absent (tests/services.py)."""
    from tests import services
    reason = services.postgres_missing()
    if reason:
        pytest.skip(reason)
    with services.postgres_cluster("etfuse_ledgers") as url:
        yield url
