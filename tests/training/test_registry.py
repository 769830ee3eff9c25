"""The model registry on the embedded default (SQLite + local artifacts): logging, the promotion
gate both ways, manual promotion, rollback, history and the serving path.

One SQLite database per module (MLflow's migration costs seconds); each test uses its own registered
model name, so tests do not depend on each other's order.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.gate import evaluate_gate

HELDOUT = pd.DataFrame({"station_id": ["52866", "52866", "52818"],
                        "date": ["2021-11-01", "2021-11-02", "2021-11-01"]})


# ----------------------------------------------------------------------------- stand-in model
def standin_onnx(path: Path, weight: float) -> Path:
    """A tiny ONNX model like the real export: input ``features`` (n, 3), output ``et`` (n, 1)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((3, 1), weight, np.float32), "W")
    b = numpy_helper.from_array(np.zeros(1, np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["et"])],
        "standin", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("et", TensorProto.FLOAT, ["n", 1])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_standin_record(folder: Path, weight: float = 1.0, *, rmse: float = 1.0, torch_example: bool = True,
                        settings_yaml: str = "home: var\n"):
    """A TrainingRecord with a torch.nn.Linear, its ONNX stand-in, a table, a plot and held-out keys."""
    import torch

    from training.registry import TrainingRecord

    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = standin_onnx(folder / f"standin_{weight:g}.onnx", weight)
    plot = folder / "scatter.png"
    if not plot.exists():  # a valid 1x1 PNG is enough: the registry only copies it
        plot.write_bytes(bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                                       "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"))
    torch.manual_seed(0)
    linear = torch.nn.Linear(3, 1)
    return TrainingRecord(
        params={"lr": 0.001, "hidden": 32, "graph": {"neighbours": 8}, "seed": 3, "sources": ["gleam", "era5land"]},
        metrics={"heldout_rmse": rmse, "heldout_gleam_rmse": 3.5, "heldout_era5land_rmse": 2.6, "heldout_kge": 0.7},
        tables={"per_station": pd.DataFrame({"station_id": ["52866", "52818"], "rmse": [rmse, rmse + 0.1]}),
                "per season": pd.DataFrame({"season": ["DJF", "JJA"], "rmse": [0.5, 1.5]})},
        plots=[plot],
        data_window={"start": "2021-01-01", "end": "2021-12-31", "train_end": "2021-10-31"},
        input_fingerprints={"gleam": "a" * 64, "era5land": "b" * 64},
        code_version="0.1.0-test",
        settings_yaml=settings_yaml,
        normalisation={"mean": [1.0, 2.0, 3.0], "std": [0.5, 0.5, 0.5]},
        torch_model=linear,
        torch_example=(np.ones((4, 3), np.float32),) if torch_example else None,
        onnx_path=onnx_path,
        onnx_example={"features": np.ones((2, 3), np.float32)},
        heldout=HELDOUT,
        metric_history={"train_loss": [3.0, 2.0, 1.5], "val_rmse": [2.5, 1.8, rmse]},
    )


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One ETFUSE_HOME (one SQLite registry) per module, no ETFUSE_*/MLFLOW_* env leaking in."""
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if (key.startswith("ETFUSE_") and key != "ETFUSE_REALDATA") or key in ("MLFLOW_TRACKING_URI",
                                                                                    "MLFLOW_REGISTRY_URI"):
                mp.delenv(key)
        yield tmp_path_factory.mktemp("registry") / "home"


@pytest.fixture
def make_registry(home, monkeypatch, request):
    """A registry with a registered model name of its own (per test) on the module's database."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from etfuse.settings import load_settings
    from training.registry import ModelRegistry

    def make(margin: float = 0.05, name: str | None = None) -> ModelRegistry:
        name = name or "m-" + request.node.name.replace("_", "-")[:60]
        settings = load_settings(home=home, region="test", mlflow={"registered_model_name": name,
                                                                   "promotion_margin_mm": margin})
        return ModelRegistry(settings)

    return make


def register(registry, folder: Path, weight: float, rmse: float, **kw):
    return registry.log_and_register(make_standin_record(folder, weight, rmse=rmse, **kw))


# ----------------------------------------------------------------------------- tests
def test_tracking_uri_order(settings, make_registry, monkeypatch):
    """explicit > MLFLOW_TRACKING_URI > settings.mlflow.tracking_uri > sqlite under ETFUSE_HOME."""
    from etfuse.settings import load_settings
    from training.registry import ModelRegistry, resolve_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    expected = f"sqlite:///{(settings.home / 'mlflow' / 'mlflow.db').resolve()}"
    assert resolve_tracking_uri(settings) == expected
    configured = load_settings(home=settings.home, mlflow={"tracking_uri": "http://mlflow.example:5000"})
    assert resolve_tracking_uri(configured) == "http://mlflow.example:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri(configured) == "http://127.0.0.1:5999"
    assert resolve_tracking_uri(configured, "sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    registry = ModelRegistry(configured)
    assert registry.tracking_uri == registry.registry_uri == "http://127.0.0.1:5999"
    assert registry.artifact_location is None  # a server keeps its own (proxied) default
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    embedded = make_registry()
    assert embedded.tracking_uri.startswith("sqlite:///") and embedded.tracking_uri.endswith("/mlflow/mlflow.db")
    home = embedded.settings.home
    assert embedded.artifact_location == (home / "mlflow" / "artifacts").resolve().as_uri()
    assert embedded.cache_dir(3) == home / "cache" / "models" / embedded.name / "3"
    # (a postgresql:// client connects at construction, so only the message helper is checked here)
    from training.registry import mask_uri
    assert mask_uri("postgresql://etf:secret@db:5432/mlflow") == "postgresql://etf:***@db:5432/mlflow"


def test_log_and_register_logs_everything(make_registry, tmp_path):
    import onnxruntime as ort

    registry = make_registry()
    record = make_standin_record(tmp_path, 2.0, rmse=1.2)
    info = registry.log_and_register(record)

    assert isinstance(info.version, int) and info.version == 1
    assert info.aliases == ("challenger",) and info.status == "challenger"
    assert info.model_uri == f"models:/{registry.name}/1"
    assert info.metrics["heldout_rmse"] == pytest.approx(1.2)
    assert info.tags["etfuse.code_version"] == "0.1.0-test"
    assert info.tags["etfuse.data_window.train_end"] == "2021-10-31"
    assert info.tags["etfuse.fingerprint.gleam"] == "a" * 64
    assert info.tags["etfuse.heldout_station_days"] == "3"
    from training.registry import heldout_fingerprint
    assert info.tags["etfuse.heldout_sha256"] == heldout_fingerprint(HELDOUT)
    assert "held-out RMSE 1.200" in info.description

    run = registry.client.get_run(info.run_id)
    assert run.data.params["lr"] == "0.001" and run.data.params["graph.neighbours"] == "8"
    assert run.data.params["data_window.start"] == "2021-01-01"
    assert run.data.params["input_fingerprint.era5land"] == "b" * 64
    assert run.data.params["code_version"] == "0.1.0-test"
    assert run.data.metrics["heldout_kge"] == pytest.approx(0.7)
    curve = registry.client.get_metric_history(info.run_id, "train_loss")
    assert [(m.step, m.value) for m in sorted(curve, key=lambda m: m.step)] == [(0, 3.0), (1, 2.0), (2, 1.5)]
    assert run.data.tags["etfuse.torch_format"] == "pt2"
    assert run.info.experiment_id == registry.experiment_id()

    def listing(path=""):
        out = []
        for item in registry.client.list_artifacts(info.run_id, path):
            out.extend(listing(item.path) if item.is_dir else [item.path])
        return out
    files = set(listing())
    assert {"evaluation/per_station.csv", "evaluation/per_season.csv", "evaluation/heldout_station_days.csv",
            "plots/scatter.png", "config/settings.yaml", "normalisation.json", "etfuse_record.json"} <= files
    # artifacts live under $ETFUSE_HOME/mlflow/artifacts (embedded default)
    artifacts = registry.settings.folder("mlflow") / "artifacts"
    assert (artifacts / info.run_id / "artifacts" / "evaluation" / "heldout_station_days.csv").is_file()

    # the registered model is the ONNX export, with a CPU-only signature whose batch dim is free
    from mlflow.models import Model
    folder, version = registry.model_dir(1)
    mlmodel = Model.load(str(folder))
    assert mlmodel.flavors["onnx"]["providers"] == ["CPUExecutionProvider"]
    spec = mlmodel.signature.inputs.inputs[0]
    assert spec.name == "features" and tuple(spec.shape) == (-1, 3)
    assert mlmodel.signature.outputs.inputs[0].name == "et"
    assert registry.normalisation(1) == record.normalisation

    # the PyTorch model was logged too (pt2) and loads back on CPU
    logged = registry.client.search_logged_models(experiment_ids=[registry.experiment_id()],
                                                  filter_string=f"source_run_id = '{info.run_id}'")
    assert {m.name for m in logged} == {"onnx", "pytorch"}
    pytorch = next(m for m in logged if m.name == "pytorch")
    import mlflow.pytorch
    loaded = mlflow.pytorch.load_model(pytorch.artifact_location)
    assert loaded(__import__("torch").ones(2, 3)).shape == (2, 1)

    path, version = registry.onnx_model_path(1)
    assert version == 1 and path.name == "model.onnx"
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"features": np.ones((5, 3), np.float32)})[0]
    np.testing.assert_allclose(out, np.full((5, 1), 6.0))


def test_gate_both_ways_and_margin(make_registry, tmp_path):
    registry = make_registry(margin=0.05)
    actor = "flow:retrain"
    assert registry.champion() is None  # no model at all yet: no champion, no error

    v1 = register(registry, tmp_path, 1.0, 1.5).version
    # a first version that does not beat raw ERA5-Land is not promoted, even without a champion
    d = registry.gate(v1, candidate_rmse=2.7, champion_rmse=None, gleam_rmse=3.5, era5land_rmse=2.6, actor=actor)
    assert not d.promoted and registry.champion() is None
    assert any("does not beat raw ERA5-Land" in r for r in d.reasons)
    assert registry.version(v1).status == "rejected"

    d = registry.gate(v1, candidate_rmse=1.5, champion_rmse=None, gleam_rmse=3.5, era5land_rmse=2.6, actor=actor)
    assert d.promoted and registry.champion().version == v1
    assert registry.challenger() is None  # promoted: no longer a challenger
    tags = registry.version(v1).tags
    assert tags["etfuse.gate.decision"] == "promoted" and tags["etfuse.gate.champion_rmse"] == "none"

    # a worse model is not promoted: the champion stays, the decision and numbers are on the version
    v2 = register(registry, tmp_path, 2.0, 1.8).version
    d = registry.gate(v2, candidate_rmse=1.8, champion_rmse=1.5, gleam_rmse=3.5, era5land_rmse=2.6, actor=actor)
    assert not d.promoted and d.champion_version == v1
    assert registry.champion().version == v1
    info = registry.version(v2)
    assert info.gate_decision == "rejected" and info.status == "rejected"
    assert "challenger" in info.aliases  # still the latest candidate
    assert float(info.tags["etfuse.gate.candidate_rmse"]) == 1.8
    assert float(info.tags["etfuse.gate.champion_rmse"]) == 1.5
    assert info.tags["etfuse.gate.champion_version"] == str(v1)
    assert float(info.tags["etfuse.gate.margin_mm"]) == 0.05
    assert info.tags["etfuse.gate.by"] == actor
    assert "does not beat champion v1" in info.tags["etfuse.gate.reasons"]
    checks = json.loads(info.tags["etfuse.gate.checks"])
    assert {c["name"]: c["passed"] for c in checks} == {"champion": False, "gleam": True, "era5land": True}

    # better, but by less than the margin: rejected
    v3 = register(registry, tmp_path, 3.0, 1.47).version
    d = registry.gate(v3, candidate_rmse=1.47, champion_rmse=1.5, gleam_rmse=3.5, era5land_rmse=2.6, actor=actor)
    assert not d.promoted and registry.champion().version == v1

    # better than the champion but not than raw GLEAM on these days: rejected
    v4 = register(registry, tmp_path, 4.0, 1.2).version
    d = registry.gate(v4, candidate_rmse=1.2, champion_rmse=1.5, gleam_rmse=1.1, era5land_rmse=2.6, actor=actor)
    assert not d.promoted and "does not beat raw GLEAM" in d.reasons[0]

    # NaN never passes
    d = registry.gate(v4, candidate_rmse=float("nan"), champion_rmse=1.5, gleam_rmse=3.5, era5land_rmse=2.6,
                      actor=actor)
    assert not d.promoted and "finite" in d.reasons[0]

    # scored on other station-days than the candidate's run recorded: rejected
    from training.registry import RegistryError, heldout_fingerprint
    d = registry.gate(v4, candidate_rmse=1.2, champion_rmse=1.5, gleam_rmse=3.5, era5land_rmse=2.6, actor=actor,
                      heldout_sha256=heldout_fingerprint(HELDOUT.iloc[:2]))
    assert not d.promoted and "not scored on the same held-out station-days" in d.reasons[0]

    # better by more than the margin and than both raw sources: promoted
    d = registry.gate(v4, candidate_rmse=1.2, champion_rmse=1.5, gleam_rmse=3.5, era5land_rmse=2.6, actor=actor,
                      heldout_sha256=registry.version(v4).tags["etfuse.heldout_sha256"])
    assert d.promoted and registry.champion().version == v4
    assert registry.version(v1).status == "retired"

    # a champion exists: its RMSE is required; the champion itself cannot be gated
    with pytest.raises(RegistryError, match="pass its RMSE"):
        registry.gate(v3, candidate_rmse=1.0, champion_rmse=None, gleam_rmse=3.5, era5land_rmse=2.6, actor=actor)
    with pytest.raises(RegistryError, match="already the champion"):
        registry.gate(v4, candidate_rmse=1.0, champion_rmse=1.2, gleam_rmse=3.5, era5land_rmse=2.6, actor=actor)

    history = registry.history()
    assert [(h.version, h.action, h.set_by) for h in history] == [(v1, "gate", actor), (v4, "gate", actor)]


def test_rollback_history_and_serving(make_registry, tmp_path):
    from training.registry import RegistryError

    registry = make_registry(margin=0.0)
    v1 = register(registry, tmp_path, 1.0, 1.5, torch_example=False).version  # pickle path of the torch model
    v2 = register(registry, tmp_path, 2.0, 1.3).version
    v3 = register(registry, tmp_path, 3.0, 1.4).version
    assert registry.client.get_run(registry.version(v1).run_id).data.tags["etfuse.torch_format"] == "pickle"

    with pytest.raises(RegistryError, match="no champion to roll back"):
        registry.rollback(actor="ops@host", reason="nothing yet")
    with pytest.raises(RegistryError, match="has no 'champion' alias"):
        registry.onnx_model_path()

    registry.gate(v1, candidate_rmse=1.5, champion_rmse=None, gleam_rmse=3.5, era5land_rmse=2.6, actor="flow:retrain")
    registry.gate(v2, candidate_rmse=1.3, champion_rmse=1.5, gleam_rmse=3.5, era5land_rmse=2.6, actor="flow:retrain")
    registry.promote(v3, actor="alice@ops", reason="operator override for the demo")
    path, version = registry.onnx_model_path()
    assert version == v3 and path.parent == registry.cache_dir(v3)

    # the serving path: one alias lookup; a cached version is not downloaded again
    import mlflow.artifacts
    def no_download(*a, **k):
        raise AssertionError("cached model downloaded again")
    original = mlflow.artifacts.download_artifacts
    mlflow.artifacts.download_artifacts = no_download
    try:
        assert registry.onnx_model_path() == (path, v3)
    finally:
        mlflow.artifacts.download_artifacts = original

    # rollback without --to: the previous champion; takes effect for the next request
    assert registry.rollback(actor="bob@ops", reason="v3 drifts in the Qaidam basin") == v2
    assert registry.onnx_model_path()[1] == v2
    assert registry.version(v3).status == "rolled back"
    assert registry.version(v3).tags["etfuse.rolled_back.by"] == "bob@ops"
    # rolling back again walks further back (v3 was rolled back, so it is skipped)
    assert registry.rollback(actor="bob@ops", reason="v2 too") == v1
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback(actor="bob@ops", reason="nothing left")
    # explicit target; promoting a rolled-back version clears its flag
    assert registry.rollback(to=v3, actor="carol@ops", reason="fixed upstream data, v3 is fine") == v3
    assert not registry.version(v3).rolled_back and registry.champion().version == v3
    with pytest.raises(RegistryError, match="already the champion"):
        registry.rollback(to=v3, actor="carol@ops", reason="again")
    with pytest.raises(RegistryError, match=rf"no version 99 of registered model '{registry.name}'; versions: 1, 2, 3"):
        registry.rollback(to=99, actor="carol@ops", reason="typo")

    history = registry.history()
    assert [(h.version, h.action) for h in history] == [(v1, "gate"), (v2, "gate"), (v3, "promote"),
                                                        (v2, "rollback"), (v1, "rollback"), (v3, "rollback")]
    assert [h.set_by for h in history] == ["flow:retrain", "flow:retrain", "alice@ops", "bob@ops", "bob@ops",
                                           "carol@ops"]
    assert history[2].reason == "operator override for the demo"
    assert history[3].previous == v3 and history[3].reason == "v3 drifts in the Qaidam basin"
    for earlier, later in zip(history, history[1:]):
        assert earlier.end == later.start and earlier.start <= later.start and not earlier.current
    assert history[-1].end is None and history[-1].current
    # the periods are also mirrored on the versions for the MLflow UI
    tags = registry.version(v2).tags
    assert tags["etfuse.champion.action"] == "rollback" and "etfuse.champion.until" in tags

    # another process (e.g. the serving host) with its own registry object sees the same history
    other = make_registry(name=registry.name)
    assert [h.version for h in other.history()] == [h.version for h in history]


def test_serving_survives_a_registry_outage(make_registry, tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    from training.registry import RegistryUnavailableError

    registry = make_registry()
    v = register(registry, tmp_path, 1.0, 1.0, torch_example=False).version
    registry.promote(v, actor="ops", reason="first")
    served = registry.onnx_model_path()

    def down(*args, **kwargs):
        raise MlflowException("API request to http://mlflow:5000/api/2.0/mlflow/registered-models/alias failed with "
                              "exception ... Max retries exceeded ... Connection refused")
    monkeypatch.setattr(registry.client, "get_model_version_by_alias", down)
    assert registry.onnx_model_path() == served  # the last resolved champion, with a warning
    with pytest.raises(RegistryUnavailableError, match="cannot reach MLflow"):
        registry.onnx_model_path("challenger")  # never resolved before: nothing to fall back to

    # a server that is not there: a clear error, quickly when MLflow's retries are turned down
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    nowhere = make_registry(name="nowhere")
    from training.registry import ModelRegistry
    nowhere = ModelRegistry(nowhere.settings, tracking_uri="http://127.0.0.1:9")
    with pytest.raises(RegistryUnavailableError, match=r"cannot reach MLflow at http://127.0.0.1:9"):
        nowhere.versions()


def test_errors_are_clear(make_registry, tmp_path):
    from training.registry import RegistryError

    registry = make_registry()
    with pytest.raises(RegistryError, match="does not exist .* yet"):
        registry.versions()
    with pytest.raises(RegistryError, match="does not exist"):
        registry.onnx_model_path()
    record = make_standin_record(tmp_path, 1.0)
    record.onnx_example = {"wrong": np.ones((2, 3), np.float32)}
    with pytest.raises(RegistryError, match=r"expects \['features'\]"):
        registry.log_and_register(record)
    record.onnx_example = {"features": np.ones((2, 4), np.float32)}
    with pytest.raises(RegistryError, match="does not run on its example feed"):
        registry.log_and_register(record)
    record = make_standin_record(tmp_path, 1.0)
    record.plots = [tmp_path / "missing.png"]
    with pytest.raises(RegistryError, match="missing.png does not exist"):
        registry.log_and_register(record)
    record = make_standin_record(tmp_path, 1.0)
    record.heldout = pd.DataFrame({"station": ["1"]})
    with pytest.raises(RegistryError, match="station_id, date"):
        registry.log_and_register(record)
    v = register(registry, tmp_path, 1.0, 1.0).version
    with pytest.raises(RegistryError, match=rf"no version 7 of registered model '{registry.name}'; versions: {v}$"):
        registry.version(7)
    with pytest.raises(RegistryError, match="no version 7"):
        registry.onnx_model_path(7)


def test_heldout_fingerprint_ignores_order_and_types():
    from training.registry import heldout_fingerprint

    a = heldout_fingerprint(HELDOUT)
    shuffled = HELDOUT.iloc[::-1].assign(date=pd.to_datetime(HELDOUT["date"][::-1]), extra=1.0)
    assert heldout_fingerprint(shuffled) == a
    assert heldout_fingerprint(pd.concat([HELDOUT, HELDOUT])) == a
    assert heldout_fingerprint(HELDOUT.iloc[:2]) != a


def test_evaluate_gate_pure():
    def passed(*args, **kw):
        return all(c.passed for c in evaluate_gate(*args, **kw))

    assert passed(1.0, None, 3.0, 2.0)
    assert not passed(2.0, None, 3.0, 2.0)                      # ties do not beat a raw source
    assert passed(1.0, 1.2, 3.0, 2.0, margin_mm=0.1)
    assert not passed(1.1, 1.2, 3.0, 2.0, margin_mm=0.1)        # must be below 1.2 - 0.1
    assert not passed(1.0, 1.2, 3.0, 2.0, heldout_matches=False)
    assert not passed(math.inf, 1.2, 3.0, 2.0)
    assert not passed(1.0, float("nan"), 3.0, 2.0)
    with pytest.raises(ValueError):
        evaluate_gate(1.0, 1.2, 3.0, 2.0, margin_mm=-1)
