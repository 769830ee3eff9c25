"""Faults on the serving side: the registry unreachable, a model that returns NaN or negative ET (at
serving and at the gate), a GPU asked for but absent (docs/reliability.md, faults F20-F23)."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.predictor import Predictor, PredictorError
from serving.product import ProductStore
from serving.update import run_update
from tests.faults.kit import WINDOW, poisoned_model
from tests.services import mlflow_server


def update(settings, predictor, **kwargs):
    return run_update(settings, predictor=predictor, product=ProductStore(settings), **kwargs)


def training_record(model_file: Path):
    """A TrainingRecord for the small exported model, with its two serving graphs as extra files."""
    import torch

    from etfuse.features import FEATURES
    from training.export import SERVING_PARTS
    from training.registry import TrainingRecord
    rng = np.random.default_rng(0)
    return TrainingRecord(
        params={"hidden": 8, "window_days": WINDOW}, metrics={"heldout_fused_rmse": 1.0},
        tables={}, plots=[], data_window={"start": "2021-06-10", "end": "2021-07-19"},
        input_fingerprints={"era5land": "a" * 64}, code_version="test", settings_yaml="home: var\n",
        normalisation={"mean": [0.0] * len(FEATURES), "std": [1.0] * len(FEATURES)},
        torch_model=torch.nn.Linear(2, 1), torch_example=None, onnx_path=model_file,
        onnx_example={"x": rng.normal(size=(1, WINDOW, 9, 9, len(FEATURES))).astype(np.float32),
                      "mask": np.ones((1, 9, 9), np.float32)},
        heldout=pd.DataFrame({"station_id": ["52866"], "date": ["2021-07-01"]}),
        extra_files=[model_file.parent / name for name in SERVING_PARTS.values()])


# ----------------------------------------------------------------------------- F20 registry unreachable
@pytest.mark.slow
def test_registry_unreachable_serving_keeps_the_last_good_model(store_home, model_file, tmp_path, monkeypatch,
                                                                record_property):
    """F20: a real ``mlflow server`` holds the champion; serving resolves it once, then the server is
    killed.  The same process keeps computing product days with the last model it resolved (with a
    warning), the API stays ready and keeps serving the product; a serving process started during
    the outage serves the version this host resolved last (its download is complete); a host that
    never resolved one refuses clearly (no product day is written without a model)."""
    from fastapi.testclient import TestClient

    from etfuse.settings import load_settings
    from serving.api import create_app
    from training.registry import ModelRegistry, RegistryUnavailableError
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")         # as docs/registry.md advises for serving
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    settings = store_home.settings
    with mlflow_server(tmp_path / "mlflow") as (url, proc):
        trainer = ModelRegistry(load_settings(home=tmp_path / "trainer", region="test"), tracking_uri=url)
        info = trainer.log_and_register(training_record(model_file))
        trainer.promote(info.version, actor="test", reason="the only model")
        registry = ModelRegistry(settings, tracking_uri=url)
        predictor = Predictor(settings, registry=registry)
        first = update(settings, predictor, start="2021-07-01", end="2021-07-05")
        assert first.model_version == info.version and len(first.written) == 5
        os.killpg(proc.pid, signal.SIGKILL)                                 # the registry goes away
        proc.wait(timeout=30)
        with pytest.raises(RegistryUnavailableError):
            registry.resolve("champion")
        t0 = time.monotonic()
        second = update(settings, predictor, start="2021-07-06", end="2021-07-10")
        assert second.model_version == info.version and len(second.written) == 5
        assert time.monotonic() - t0 < 60
        client = TestClient(create_app(settings, registry=registry, predictor=predictor))
        assert client.get("/ready").status_code == 200
        assert client.get("/model").status_code == 503                      # says so, does not hang or 500
        r = client.get("/timeseries", params={"lat": 36.5, "lon": 101.5, "start": "2021-07-01", "end": "2021-07-10"})
        assert r.status_code == 200 and len(r.json()["values"]) == 10
        # a serving process restarted during the outage, on this host
        restarted = Predictor(settings, registry=ModelRegistry(settings, tracking_uri=url))
        third = update(settings, restarted, start="2021-07-11", end="2021-07-12")
        assert third.model_version == info.version and len(third.written) == 2
        # a host that never resolved the champion refuses, and writes nothing
        other = load_settings(home=tmp_path / "other-host", region="test")
        with pytest.raises(PredictorError, match="no model to serve"):
            Predictor(other, registry=ModelRegistry(other, tracking_uri=url)).model()
    assert {r.model_version for r in ProductStore(settings).records()} == {info.version}
    record_property("fault", "F20")
    record_property("bad_inputs", 1)
    record_property("files_lost", 0)


# ----------------------------------------------------------------------------- F21 NaN / negative at serving
@pytest.mark.parametrize("kind", ["nan", "negative"])
def test_model_returning_nan_or_negative_is_refused_at_serving(store_home, model_file, tmp_path, kind,
                                                               record_property):
    """F21: a champion whose output is NaN (or negative) everywhere: the predictor refuses the day
    (PredictorError), the update stops, no day is written with it, the days the good model wrote
    are untouched."""
    settings = store_home.settings
    good = Predictor(settings, model_path=model_file, model_version=1)
    update(settings, good, start="2021-07-01", end="2021-07-03")
    before = {r.day: (r.file_sha256, r.model_version) for r in ProductStore(settings).records()}
    bad = Predictor(settings, model_path=poisoned_model(model_file, tmp_path / kind, kind), model_version=2)
    with pytest.raises(PredictorError, match="non-finite or negative"):
        update(settings, bad, start="2021-07-01", end="2021-07-05")
    after = {r.day: (r.file_sha256, r.model_version) for r in ProductStore(settings).records()}
    assert after == before                                                   # nothing written by v2
    for day in after:
        field = ProductStore(settings).read_field(day)
        assert np.isfinite(field).all() and (field >= 0).all()
    record_property("fault", "F21")
    record_property("bad_inputs", 1)
    record_property("files_lost", 0)


# ----------------------------------------------------------------------------- F22 NaN / negative at the gate
def heldout_frame(fused: np.ndarray) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = fused.size
    obs = np.clip(2.0 + rng.normal(size=n), 0.5, None)
    return pd.DataFrame({"station_id": np.repeat(["52866", "52818"], n // 2), "date": pd.date_range("2021-01-01", periods=n),
                         "set": "spatial", "season": "JJA", "obs": obs, "gleam": obs + 3.0, "era5land": obs + 2.0,
                         "fused": fused + obs})


def test_model_returning_nan_or_negative_is_refused_at_the_gate(tmp_path, monkeypatch, record_property):
    """F22: the gate refuses a candidate with a NaN RMSE (``finite``), and one whose held-out
    predictions hold NaN or negative values even when its RMSE -- computed on the station-days where
    every model has a value -- looks excellent (``predictions``); the registry records the refusal
    and the champion does not move."""
    from etfuse.settings import load_settings
    from tests.training.test_registry import make_standin_record
    from training.evaluate import summary_metrics
    from training.gate import evaluate_gate
    from training.registry import ModelRegistry
    checks = evaluate_gate(float("nan"), None, 3.5, 2.6)
    assert [c.name for c in checks] == ["finite"] and not checks[0].passed

    noise = np.random.default_rng(1).normal(scale=0.1, size=200)
    nan_model = noise.copy()
    nan_model[::10] = np.nan                                    # NaN on a tenth of the station-days
    frame = heldout_frame(nan_model)
    metrics = summary_metrics(frame, ["fused", "gleam", "era5land"])
    rmse = metrics["heldout_fused_rmse"]
    assert np.isfinite(rmse) and rmse < 0.2                     # NaN rows dropped: the RMSE alone would pass
    assert all(c.passed for c in evaluate_gate(rmse, None, metrics["heldout_gleam_rmse"],
                                               metrics["heldout_era5land_rmse"]))
    refused = evaluate_gate(rmse, None, metrics["heldout_gleam_rmse"], metrics["heldout_era5land_rmse"],
                            candidate_predictions=frame["fused"])
    assert [(c.name, c.passed) for c in refused] == [("predictions", False)] and "20 non-finite" in refused[0].text
    negative = heldout_frame(noise)
    negative.loc[::25, "fused"] = -0.5
    refused = evaluate_gate(0.1, None, 3.5, 2.6, candidate_predictions=negative["fused"])
    assert not refused[0].passed and "8 negative" in refused[0].text
    ok = evaluate_gate(0.1, None, 3.5, 2.6, candidate_predictions=heldout_frame(noise)["fused"])
    assert all(c.passed for c in ok) and ok[0].name == "predictions"

    for key in [k for k in os.environ if k.startswith("ETFUSE_") and k != "ETFUSE_REALDATA"]:
        monkeypatch.delenv(key)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    registry = ModelRegistry(load_settings(home=tmp_path / "home", region="test"))
    v = registry.log_and_register(make_standin_record(tmp_path / "m", rmse=0.1)).version
    decision = registry.gate(v, candidate_rmse=rmse, champion_rmse=None, gleam_rmse=3.5, era5land_rmse=2.6,
                             actor="test", candidate_predictions=frame["fused"].to_numpy())
    assert not decision.promoted and registry.champion() is None
    tags = registry.version(v).tags
    assert tags["etfuse.gate.decision"] == "rejected" and "non-finite" in tags["etfuse.gate.reasons"]
    record_property("fault", "F22")
    record_property("bad_inputs", 4)
    record_property("files_lost", 0)


# ----------------------------------------------------------------------------- F23 GPU asked for but absent
def test_gpu_asked_for_but_absent(store_home, model_file, caplog, record_property):
    """F23: ``serving.device: cuda`` on a host without a usable CUDA provider: the predictor refuses
    to start (PredictorError naming the fix) and no day is written; with
    ``serving.allow_cpu_fallback: true`` it runs on the CPU and says so; ``auto`` quietly uses the CPU.
    ``training.device: cuda`` without CUDA refuses before training starts."""
    import onnxruntime as ort

    from training.train import pick_device
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this host has a CUDA provider: the fault cannot be injected here")
    settings = store_home.settings

    def with_serving(**values):
        return settings.model_copy(update={"serving": settings.serving.model_copy(update=values)})

    cuda = with_serving(device="cuda")
    with pytest.raises(PredictorError, match="allow_cpu_fallback"):
        update(cuda, Predictor(cuda, model_path=model_file, model_version=1), start="2021-07-01", end="2021-07-02")
    assert ProductStore(settings).records() == []
    fallback = with_serving(device="cuda", allow_cpu_fallback=True)
    with caplog.at_level(logging.WARNING):
        done = update(fallback, Predictor(fallback, model_path=model_file, model_version=1),
                      start="2021-07-01", end="2021-07-02")
    assert len(done.written) == 2
    auto = with_serving(device="auto")
    assert Predictor(auto, model_path=model_file, model_version=1).model().providers == ["CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="no CUDA device"):
        pick_device("cuda")
    assert str(pick_device("auto")) == "cpu"
    record_property("fault", "F23")
    record_property("bad_inputs", 2)
    record_property("files_lost", 0)
