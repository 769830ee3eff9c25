"""The registry against a real ``mlflow server`` (one worker, loopback) on a PostgreSQL 15 backend
with proxied artifacts, all started here in temporary folders and torn down afterwards.

Skipped when the PostgreSQL 15 binaries are absent.  PostgreSQL refuses to run as root, so as root
it runs as the ``postgres`` user (runuser) in a folder that user owns.
"""

from __future__ import annotations

import os
import time

import numpy as np
import onnxruntime as ort
import pytest

from tests import services
from tests.training.test_registry import make_standin_record


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL 15 cluster on a free loopback port; yields its SQLAlchemy URI."""
    reason = services.postgres_missing()
    if reason:
        pytest.skip(reason)
    with services.postgres_cluster("mlflow") as url:
        yield url


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """``mlflow server --workers 1`` on a free loopback port over the PostgreSQL backend."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    with services.mlflow_server(folder, postgres) as (url, _):
        yield {"url": url, "artifacts": folder / "artifacts"}


def test_registry_against_mlflow_server_on_postgres(mlflow_server, tmp_path, monkeypatch):
    from etfuse.settings import load_settings
    from training.registry import ModelRegistry, RegistryError

    for key in list(os.environ):
        if key.startswith("ETFUSE_") and key != "ETFUSE_REALDATA":
            monkeypatch.delenv(key)
    # the environment variable wins over settings (which point nowhere useful here)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server["url"])
    settings = load_settings(home=tmp_path / "trainer-home", region="test",
                             mlflow={"tracking_uri": "http://127.0.0.1:9/unused", "promotion_margin_mm": 0.05})
    registry = ModelRegistry(settings)
    assert registry.tracking_uri == mlflow_server["url"]

    t0 = time.monotonic()
    infos = [registry.log_and_register(make_standin_record(tmp_path / "m", w, rmse=r)) for w, r in ((1.0, 1.5),
                                                                                                    (2.0, 1.6))]
    logged = time.monotonic() - t0
    assert [i.version for i in infos] == [1, 2]  # ints, although MLflow returns strings over HTTP
    assert registry.challenger().version == 2
    run = registry.client.get_run(infos[0].run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied through the server
    assert run.data.tags["etfuse.torch_format"] == "pt2"
    assert float(run.data.metrics["heldout_rmse"]) == 1.5
    stored = {p.name for p in mlflow_server["artifacts"].rglob("*") if p.is_file()}
    assert {"model.onnx", "heldout_station_days.csv", "settings.yaml", "scatter.png", "model.pt2"} <= stored
    assert not (settings.home / "mlflow" / "artifacts").exists()  # nothing written locally

    # the gate both ways: a first version that beats both raw sources is promoted, a worse one is not
    actor = "flow:retrain"
    assert registry.gate(1, candidate_rmse=1.5, champion_rmse=None, gleam_rmse=3.5, era5land_rmse=2.6,
                         actor=actor).promoted
    worse = registry.gate(2, candidate_rmse=1.6, champion_rmse=1.5, gleam_rmse=3.5, era5land_rmse=2.6, actor=actor)
    assert not worse.promoted and registry.champion().version == 1
    tags = registry.version(2).tags
    assert tags["etfuse.gate.decision"] == "rejected" and float(tags["etfuse.gate.champion_rmse"]) == 1.5

    # serving on another host: its own ETFUSE_HOME and cache, the same registry
    serving = ModelRegistry(load_settings(home=tmp_path / "serving-home", region="test"),
                            tracking_uri=mlflow_server["url"])
    path, version = serving.onnx_model_path()
    assert version == 1 and path.is_relative_to(tmp_path / "serving-home" / "cache" / "models")
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"features": np.ones((4, 3), np.float32)})[0]
    np.testing.assert_allclose(out, np.full((4, 1), 3.0))
    assert serving.normalisation() == {"mean": [1.0, 2.0, 3.0], "std": [0.5, 0.5, 0.5]}

    # a manual promotion, then a rollback: one call each, and the next serving request follows
    registry.promote(2, actor="ops@host", reason="override for a test")
    assert serving.onnx_model_path()[1] == 2
    assert registry.rollback(actor="ops@host", reason="v2 drifts") == 1
    assert serving.onnx_model_path()[1] == 1
    assert registry.version(2).status == "rolled back"

    history = serving.history()
    assert [(h.version, h.action, h.set_by, h.reason) for h in history] == [
        (1, "gate", actor, history[0].reason), (2, "promote", "ops@host", "override for a test"),
        (1, "rollback", "ops@host", "v2 drifts")]
    assert history[0].reason.startswith("v1 promoted")
    assert history[-1].current and history[-1].end is None
    assert all(a.end == b.start for a, b in zip(history, history[1:]))
    print(f"two versions logged and registered over HTTP in {logged:.1f} s")

    with pytest.raises(RegistryError, match="no version 9 of registered model 'etfuse-gcn-gru'; versions: 1, 2"):
        serving.version(9)
