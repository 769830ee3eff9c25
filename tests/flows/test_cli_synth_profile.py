"""``etfuse synth --profile``: the realistic world from the CLI, and a refused profile name."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from flows.cli import app


def test_synth_realistic_profile(tmp_path):
    result = CliRunner().invoke(app, ["synth", "--profile", "realistic", "--out", str(tmp_path), "--bbox",
                                      "101,36,101.5,36.5", "--resolution", "0.1", "--start", "2000-02-20",
                                      "--end", "2000-02-27", "--seed", "5"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["profile"] == "realistic" and manifest["spec"]["seed"] == 5
    assert len(manifest["files"]["modis"]) == 4                          # 24-27 February 2000 only
    assert (tmp_path / "truth" / "regimes.csv").exists() and (tmp_path / "truth" / "pan_coefficients.csv").exists()


def test_synth_unknown_profile_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["synth", "--profile", "hard", "--out", str(tmp_path)])
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "unknown profile 'hard'; expected fast or realistic" in text
