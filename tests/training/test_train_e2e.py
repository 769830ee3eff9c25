"""`etfuse train` end to end on a two-year synthetic world: the fused model beats both raw sources
at held-out stations, registers, passes the gate; a worse model does not; rollback works."""

from __future__ import annotations

import re
import time

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app


@pytest.mark.slow
def test_train_register_gate_and_rollback(two_year_store, tmp_path):
    settings, world = two_year_store
    config = tmp_path / "etfuse.yaml"
    config.write_text(yaml.safe_dump({"home": str(settings.home), "region": "test",
                                      "static": {"elevation_file": str(world / "static" / "elevation.nc")}}))
    runner = CliRunner()
    t0 = time.perf_counter()
    first = runner.invoke(app, ["--config", str(config), "train"])
    minutes = (time.perf_counter() - t0) / 60
    assert first.exit_code == 0, first.output
    assert minutes < 8, f"etfuse train took {minutes:.1f} min"
    table = {line.split()[0]: float(line.split()[2]) for line in first.output.splitlines()
             if line.split() and line.split()[0] in ("fused", "gleam", "era5land")}
    assert table["fused"] < table["era5land"] < table["gleam"], first.output
    # the yardstick: every baseline fitted on the same training stations; the gate compares with the strongest
    assert "strongest baseline on the held-out stations:" in first.output
    assert "baseline_" in first.output
    assert re.search(r"registered version 1; gate: v1 (promoted|rejected)", first.output)
    if "gate: v1 rejected" in first.output:      # honest outcome when it only ties or loses to the baseline
        assert "baseline" in first.output.split("gate: v1 rejected")[1]
        assert runner.invoke(app, ["--config", str(config), "models", "promote", "1", "--reason", "test"]).exit_code == 0
    listing = runner.invoke(app, ["--config", str(config), "models", "list"])
    assert listing.exit_code == 0 and re.search(r"\n1 .* \d\.\d{3} ", listing.output), listing.output

    # a deliberately weak model (one epoch, tiny) is registered but not promoted
    weak = yaml.safe_load(config.read_text())
    weak["training"] = {"epochs": 1, "hidden": 4, "learning_rate": 1e-4}
    config.write_text(yaml.safe_dump(weak))
    second = runner.invoke(app, ["--config", str(config), "train"])
    assert second.exit_code == 0, second.output
    assert "champion" in second.output                              # the champion was scored on the same days
    assert "registered version 2; gate: v2 rejected" in second.output

    from training.registry import ModelRegistry
    registry = ModelRegistry(settings)
    assert registry.champion().version == 1
    # the interval: calibrated on the spatial hold-out, its coverage logged, its factors in the ONNX
    assert re.search(r"interval: 90% half-widths scaled by lower/upper factors all \d+\.\d\d/\d+\.\d\d.*coverage all \d",
                     first.output), first.output
    v1 = registry.champion().metrics
    assert 0.5 < v1["interval_coverage_all"] <= 1.0 and v1["interval_width_mm_all"] > 0
    assert v1["interval_factor_lower_all"] > 0 and v1["interval_factor_upper_all"] > 0
    from etfuse.interval import IntervalCalibration
    from training.export import onnx_metadata
    calibration = IntervalCalibration.from_json(onnx_metadata(registry.onnx_model_path("champion")[0])["interval_calibration"])
    assert calibration.level == 0.9
    assert calibration.overall == pytest.approx((v1["interval_factor_lower_all"], v1["interval_factor_upper_all"]))
    # a manual promotion, then a rollback: one command each, history tells the story
    assert runner.invoke(app, ["--config", str(config), "models", "promote", "2", "--reason", "test"]).exit_code == 0
    assert registry.champion().version == 2
    back = runner.invoke(app, ["--config", str(config), "models", "rollback", "--reason", "worse in test"])
    assert back.exit_code == 0, back.output
    assert registry.champion().version == 1
    history = runner.invoke(app, ["--config", str(config), "models", "history"])
    assert history.exit_code == 0 and "rollback" in history.output and "worse in test" in history.output
