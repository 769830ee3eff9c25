"""``etfuse evaluate``: usage errors exit 2 before any work; the protocol's report on a store."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from flows.cli import app


def _config(tmp_path, settings) -> str:
    path = tmp_path / "etfuse.yaml"
    path.write_text(yaml.safe_dump({"home": str(settings.home), "region": "test"}))
    return str(path)


def test_unknown_variant_is_a_usage_error(tmp_path, settings):
    result = CliRunner().invoke(app, ["--config", _config(tmp_path, settings), "evaluate", "--variants", "gcn_gru,nope"])
    assert result.exit_code == 2
    assert "unknown variant" in result.output and "no_graph" in result.output


def test_evaluate_is_registered_with_its_options():
    result = CliRunner().invoke(app, ["evaluate", "--help"])
    assert result.exit_code == 0
    for option in ("--champion", "--variants", "--truth", "--out"):
        assert option in result.output
