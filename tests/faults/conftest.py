"""Fixtures of the fault catalogue: fresh homes, a harmonised store made once, a small exported model.

See kit.py for the helpers and docs/reliability.md for the catalogue itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.kit import WINDOW, Home, copy_home, make_home
from tests.standins import export_small_model


def _clean_env(monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith("ETFUSE_") and k != "ETFUSE_REALDATA"]:
        monkeypatch.delenv(key)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def home(tmp_path, small_world, monkeypatch) -> Home:
    """A fresh, empty ETFUSE_HOME over the small world's region (no ETFUSE_* variable leaks in)."""
    _clean_env(monkeypatch)
    return make_home(tmp_path / "home", small_world)


@pytest.fixture(scope="session")
def harmonised_template(small_world, tmp_path_factory) -> Path:
    """A home with the small world harmonised (ERA5-Land, MODIS, CMA, stations; GLEAM withheld: it is
    'late'), copied by the tests that need a store but are not about ingest."""
    from etfuse.harmonise import harmonise_into_store
    from etfuse.store import HarmonisedStore
    root = tmp_path_factory.mktemp("fault-template") / "home"
    home = make_home(root, small_world)
    settings = home.settings
    store = HarmonisedStore(settings.harmonised)
    for source in ("era5land", "modis", "cma", "stations"):
        for path in sorted((small_world / "landing" / source).glob("*")):
            harmonise_into_store(source, path, store, settings=settings)
    return root


@pytest.fixture
def store_home(harmonised_template, tmp_path, small_world, monkeypatch) -> Home:
    _clean_env(monkeypatch)
    return copy_home(harmonised_template, tmp_path / "home", small_world)


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    """A small GCN-GRU (hidden 8, window WINDOW) exported as the whole model plus the two serving graphs."""
    return export_small_model(tmp_path_factory.mktemp("fault-model"), window_days=WINDOW)
