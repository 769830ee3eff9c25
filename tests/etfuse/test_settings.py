from pathlib import Path

import pytest
from pydantic import ValidationError

from etfuse.settings import RUNTIME_FOLDERS, load_settings


def test_defaults_are_the_published_region(monkeypatch):
    for key in ("ETFUSE_CONFIG", "ETFUSE_HOME"):
        monkeypatch.delenv(key, raising=False)
    s = load_settings()
    assert s.region.bbox == (89.5, 31.37, 103.4, 39.87)
    assert s.region.resolution_deg == 0.01
    assert s.home == Path("var")
    assert s.window_days == 7
    assert s.mlflow_tracking_uri.startswith("sqlite:///") and s.mlflow_tracking_uri.endswith("var/mlflow/mlflow.db")


def test_yaml_then_env_then_overrides(tmp_path, monkeypatch):
    cfg = tmp_path / "etfuse.yaml"
    cfg.write_text("home: /data/etfuse\nregion: test\nwindow_days: 5\ncma:\n  pan_coefficient_large: 0.6\n")
    monkeypatch.setenv("ETFUSE_WINDOW_DAYS", "9")
    monkeypatch.setenv("ETFUSE_CMA__PAN_COEFFICIENT_SMALL", "0.4")
    s = load_settings(cfg)
    assert s.home == Path("/data/etfuse")
    assert s.region.name == "test" and s.region.lon_min == 100.5
    assert s.window_days == 9                       # env beats YAML
    assert s.cma.pan_coefficient_large == 0.6       # YAML beats default
    assert s.cma.pan_coefficient_small == 0.4       # nested env key
    assert load_settings(cfg, window_days=3).window_days == 3   # explicit override beats env


def test_config_file_from_environment(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("region:\n  name: test\n  resolution_deg: 0.05\n")
    monkeypatch.setenv("ETFUSE_CONFIG", str(cfg))
    s = load_settings()
    assert s.region.resolution_deg == 0.05 and s.region.lat_max == 37.5


def test_unknown_keys_are_rejected(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("windw_days: 5\n")
    with pytest.raises(ValidationError, match="windw_days"):
        load_settings(cfg)
    cfg.write_text("cma:\n  pan_coeficient: 0.5\n")
    with pytest.raises(ValidationError, match="pan_coeficient"):
        load_settings(cfg)


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_region_must_hold_whole_cells_and_be_ordered():
    with pytest.raises(ValidationError, match="not a whole number"):
        load_settings(region={"name": "x", "lon_min": 100, "lon_max": 100.015, "lat_min": 30, "lat_max": 31,
                              "resolution_deg": 0.01})
    with pytest.raises(ValidationError, match="lon_min < lon_max"):
        load_settings(region={"name": "x", "lon_min": 101, "lon_max": 100, "lat_min": 30, "lat_max": 31})
    with pytest.raises(ValidationError, match="unknown region"):
        load_settings(region="atlantis")


def test_runtime_folders(tmp_path):
    s = load_settings(home=tmp_path)
    s.ensure_folders()
    for name in ("landing", "archive", "quarantine", "harmonised", "product", "mlflow", "alerts", "reports"):
        assert name in RUNTIME_FOLDERS and (tmp_path / name).is_dir()
    with pytest.raises(KeyError, match="unknown runtime folder"):
        s.folder("tmp")
    assert "home:" in s.to_yaml()


def test_freshness_delays_by_source_and_unknown_source_named():
    s = load_settings(None, freshness={"modis_days": 1.5, "gleam_days": None})
    assert s.freshness.expected_delay_days("modis") == 1.5
    assert s.freshness.expected_delay_days("gleam") is None
    assert s.freshness.expected_delay_days("era5land") == 6.0
    with pytest.raises(KeyError, match="no freshness setting for 'grace'.*era5land"):
        s.freshness.expected_delay_days("grace")
