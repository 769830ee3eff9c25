"""``etfuse models list | show | promote | rollback | history`` on the embedded registry."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from flows import cli_models
from tests.training.test_registry import make_standin_record

wrapper = typer.Typer()
wrapper.add_typer(cli_models.app, name="models")


@wrapper.callback()
def _root() -> None:
    """Stands in for the main `etfuse` app."""


@pytest.fixture
def home(tmp_path, monkeypatch):
    for key in list(os.environ):
        if (key.startswith("ETFUSE_") and key != "ETFUSE_REALDATA") or key in ("MLFLOW_TRACKING_URI",
                                                                                "MLFLOW_REGISTRY_URI"):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    monkeypatch.setenv("ETFUSE_HOME", str(home))
    monkeypatch.setenv("USER", "tester")
    return home


def run(*args: str):
    return CliRunner().invoke(wrapper, ["models", *args])


def parse_table(lines: list[str]) -> list[dict[str, str]]:
    """Rows of a table printed by cli_models.table (header, dashes, rows) as dicts by header."""
    header, dashes, *rows = lines
    spans, start = [], None
    for i, ch in enumerate(dashes + " "):
        if ch == "-" and start is None:
            start = i
        elif ch != "-" and start is not None:
            spans.append((start, i))
            start = None
    spans[-1] = (spans[-1][0], None)  # the last column is not padded
    names = [header[a:b].strip() for a, b in spans]
    return [{n: row[a:b].strip() for n, (a, b) in zip(names, spans)} for row in rows]


def test_models_commands(home, tmp_path):
    from etfuse.settings import load_settings
    from training.registry import ModelRegistry, RegistryError

    result = run("list")
    assert isinstance(result.exception, RegistryError)
    assert "registered model 'etfuse-gcn-gru' does not exist" in str(result.exception)

    registry = ModelRegistry(load_settings())  # the same ETFUSE_HOME as the CLI
    assert str(registry.settings.home) == str(home)
    for weight, rmse in ((1.0, 1.5), (2.0, 1.3), (3.0, 1.9)):
        registry.log_and_register(make_standin_record(tmp_path / "model", weight, rmse=rmse))
    registry.gate(1, candidate_rmse=1.5, champion_rmse=None, gleam_rmse=3.5, era5land_rmse=2.6, actor="flow:retrain")
    registry.gate(2, candidate_rmse=1.3, champion_rmse=1.5, gleam_rmse=3.5, era5land_rmse=2.6, actor="flow:retrain")
    registry.gate(3, candidate_rmse=1.9, champion_rmse=1.3, gleam_rmse=3.5, era5land_rmse=2.6, actor="flow:retrain")

    result = run("list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "champion: version 2" in lines[0]
    rows = {r["VERSION"]: r for r in parse_table(lines[1:])}
    assert [rows["1"][k] for k in ("ALIASES", "STATUS", "HELDOUT_RMSE", "GATE")] == ["-", "retired", "1.500",
                                                                                    "promoted"]
    assert [rows["2"][k] for k in ("ALIASES", "STATUS", "HELDOUT_RMSE", "GATE")] == ["champion", "champion", "1.300",
                                                                                    "promoted"]
    assert [rows["3"][k] for k in ("ALIASES", "STATUS", "HELDOUT_RMSE", "GATE")] == ["challenger", "rejected",
                                                                                    "1.900", "rejected"]
    assert rows["3"]["DATA"] == "2021-01-01..2021-12-31" and rows["3"]["CODE"] == "0.1.0-test"

    result = run("show", "3")
    assert result.exit_code == 0, result.output
    assert "status:       rejected (aliases: challenger)" in result.output
    assert "gate: rejected" in result.output and "does not beat champion v2" in result.output
    assert "heldout_rmse" in result.output and "2021-01-01 .. 2021-12-31" in result.output

    result = run("show", "7")
    assert isinstance(result.exception, RegistryError)
    assert str(result.exception) == "no version 7 of registered model 'etfuse-gcn-gru'; versions: 1, 2, 3"

    result = run("promote", "3", "--reason", "better in the Qaidam basin")
    assert result.exit_code == 0, result.output
    assert "champion of 'etfuse-gcn-gru' is now version 3 (was 2)" in result.output
    assert "note: the gate had rejected version 3" in result.output
    assert registry.champion().version == 3

    result = run("rollback", "--reason", "v3 drifts", "--by", "ops-oncall")
    assert result.exit_code == 0, result.output
    assert "champion is now version 2 (was 3)" in result.output
    assert registry.onnx_model_path()[1] == 2  # the next serving request gets version 2

    result = run("rollback", "--to", "1")
    assert result.exit_code == 0, result.output
    assert registry.champion().version == 1

    result = run("history")
    assert result.exit_code == 0, result.output
    body = parse_table(result.output.splitlines())
    me = f"tester@{os.uname().nodename}"
    assert [(r["VERSION"], r["ACTION"], r["BY"]) for r in body] == [
        ("1", "gate", "flow:retrain"), ("2", "gate", "flow:retrain"), ("3", "promote", me),
        ("2", "rollback", "ops-oncall"), ("1", "rollback", me)]
    assert body[2]["REASON"] == "better in the Qaidam basin" and body[3]["REASON"] == "v3 drifts"
    assert body[4]["REASON"] == "manual rollback" and body[0]["REASON"].startswith("v1 promoted: no champion yet")
    assert body[-1]["UNTIL (UTC)"] == "now"
    assert [r["UNTIL (UTC)"] for r in body[:-1]] == [r["FROM (UTC)"] for r in body[1:]]

    result = run("show", "2")
    assert "champion periods:" in result.output and result.output.count("rollback") >= 1

    result = run("rollback", "--to", "1")
    assert isinstance(result.exception, RegistryError) and "already the champion" in str(result.exception)


def test_help_is_fast_and_imports_no_mlflow():
    code = ("import sys, flows.cli_models; "
            "bad = [m for m in ('mlflow', 'training.registry', 'torch', 'onnx') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    result = CliRunner().invoke(wrapper, ["models", "--help"])
    assert result.exit_code == 0
    for command in ("list", "show", "promote", "rollback", "history"):
        assert command in result.output
