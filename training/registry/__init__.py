"""The model registry of the GCN-GRU, on MLflow: log a training run, register its ONNX model,
gate it, promote it, roll it back, and tell the champion's history.

* One registered model (``settings.mlflow.registered_model_name``); every training run registers
  one *version* whose model is the ONNX export (what serving runs).  The PyTorch model, the
  evaluation tables, plots, resolved settings, normalisation stats and held-out keys stay in the run.
* Aliases: ``challenger`` is the latest registered candidate, ``champion`` is what serving loads.
  Serving resolves ``champion`` with one registry call per request, so moving the alias (promote,
  rollback) takes effect for the next request; downloads are cached by version.
* MLflow keeps no alias history, so every champion change is recorded as an append-only *event*
  in the registry itself: a registered-model tag ``etfuse.champion_event.<UTC time>.<random>``
  holding JSON (version, previous, at, action, by, reason).  Unique keys mean concurrent writers
  never overwrite each other's records; ``history()`` turns the events into champion periods.
  The same facts are mirrored on the versions (``etfuse.champion.*`` tags) for the MLflow UI.
* The gate's decision, numbers and reasons are tags ``etfuse.gate.*`` on the version.

Works with the embedded default (SQLite + ``$ETFUSE_HOME/mlflow/artifacts``) and any tracking URI
(an ``mlflow server`` over HTTP, a PostgreSQL database).  See docs/registry.md.

The package, one module per job:

* ``records.py``   the training record, version and history entries, tag names, errors;
* ``client.py``    the MLflow connection and reading versions and aliases (``RegistryClient``);
* ``runs.py``      logging a training run and registering its ONNX model (``RunLogging``);
* ``lifecycle.py`` gate, promote, rollback, history (``Lifecycle``);
* ``cache.py``     the serving-side download cache (``ServingCache``).
"""

from __future__ import annotations

from etfuse.actor import default_actor
from training.gate import GateCheck, GateDecision
from training.registry.cache import ServingCache
from training.registry.client import RegistryClient, mask_uri, resolve_tracking_uri
from training.registry.lifecycle import Lifecycle
from training.registry.records import (CHALLENGER, CHAMPION, HistoryEntry, ModelVersionInfo, RegistryError,
                                       RegistryUnavailableError, TrainingRecord, heldout_fingerprint)
from training.registry.runs import RunLogging

__all__ = ["ModelRegistry", "TrainingRecord", "ModelVersionInfo", "HistoryEntry", "GateDecision", "GateCheck",
           "RegistryError", "RegistryUnavailableError", "default_actor", "mask_uri", "heldout_fingerprint",
           "resolve_tracking_uri", "CHAMPION", "CHALLENGER"]


class ModelRegistry(RunLogging, Lifecycle, ServingCache, RegistryClient):
    """The GCN-GRU's registered model on MLflow (see the package docstring).

    ``tracking_uri`` overrides every other source of the URI (see resolve_tracking_uri); the model
    registry always lives at the tracking URI.
    """

    def __repr__(self) -> str:
        return f"ModelRegistry({self.name!r} at {mask_uri(self.tracking_uri)})"
