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
"""

from __future__ import annotations

import contextlib
import copy
import getpass
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pandas as pd

from etfuse.alerts import Alert, AlertDispatcher
from etfuse.errors import EtfuseError
from training.gate import GateCheck, GateDecision, evaluate_gate

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from etfuse.settings import Settings

__all__ = ["ModelRegistry", "TrainingRecord", "ModelVersionInfo", "HistoryEntry", "GateDecision", "GateCheck",
           "RegistryError", "RegistryUnavailableError", "default_actor", "mask_uri", "heldout_fingerprint",
           "resolve_tracking_uri", "CHAMPION", "CHALLENGER"]

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
EVENT_PREFIX = "etfuse.champion_event."
METRIC_PREFIX = "etfuse.metric."
GATE_PREFIX = "etfuse.gate."
TAG_ROLLED_BACK = "etfuse.rolled_back"
TAG_HELDOUT = "etfuse.heldout_sha256"
ONNX_MODEL_NAME = "onnx"
TORCH_MODEL_NAME = "pytorch"
_CACHE_MARKER = ".etfuse-model.json"
#: ONNX examples larger than this [bytes] are not stored with the model (the signature still is)
EXAMPLE_MAX_BYTES = 1_000_000
_fluent_lock = threading.RLock()


class RegistryError(EtfuseError):
    """The model registry cannot do what was asked (unknown version, no champion, bad record ...)."""


class RegistryUnavailableError(RegistryError):
    """MLflow cannot be reached (server down, network, database)."""


# ----------------------------------------------------------------------------- records
@dataclass
class TrainingRecord:
    """Everything one training run hands to the registry (see ModelRegistry.log_and_register)."""

    params: dict[str, Any]                  # hyper-parameters, window, seed ... (nested dicts are flattened)
    metrics: dict[str, float]               # flat, e.g. {"heldout_rmse": 1.1, "heldout_gleam_rmse": 3.4, ...}
    tables: dict[str, pd.DataFrame]         # evaluation tables -> evaluation/<name>.csv
    plots: list[Path]                       # PNG files -> plots/
    data_window: dict[str, str]             # {"start": ..., "end": ..., "train_end": ...}
    input_fingerprints: dict[str, str]      # per source: sha256 over the harmonised days used
    code_version: str                       # git describe or package version
    settings_yaml: str                      # resolved settings -> config/settings.yaml
    normalisation: dict                     # -> normalisation.json (run and ONNX model)
    torch_model: "torch.nn.Module"          # logged with mlflow.pytorch (a CPU copy)
    torch_example: tuple | None             # example inputs of torch_model (arrays or tensors)
    onnx_path: Path                         # the exported ONNX file; registered as the version's model
    onnx_example: dict[str, np.ndarray]     # feed for the ONNX model: checked, and defines its signature
    heldout: pd.DataFrame | None = None     # held-out station-day keys (station_id, date) used for the gate
    #: files stored with the registered model under extra_files/ (e.g. the two serving graphs)
    extra_files: list[Path] = field(default_factory=list)
    run_name: str | None = None             # MLflow run name; default "gcn-gru <start>..<end>"
    #: per-epoch curves, e.g. {"train_loss": [...], "val_rmse": [...]}, logged as metrics with step = epoch
    metric_history: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered version: where it came from, its aliases, tags and (tagged) metrics."""

    name: str
    version: int
    run_id: str | None
    model_uri: str                          # models:/<name>/<version>
    source: str                             # the logged ONNX model (models:/m-<id> in MLflow 3)
    aliases: tuple[str, ...]
    tags: dict[str, str]
    metrics: dict[str, float]
    created_at: datetime | None
    description: str = ""

    @property
    def gate_decision(self) -> str | None:
        """"promoted" | "rejected" | None (the gate has not run on this version)."""
        return self.tags.get(GATE_PREFIX + "decision")

    @property
    def rolled_back(self) -> bool:
        return self.tags.get(TAG_ROLLED_BACK) == "true"

    @property
    def status(self) -> str:
        """champion | rolled back | rejected | challenger | retired (was champion) | registered."""
        if CHAMPION in self.aliases:
            return "champion"
        if self.rolled_back:
            return "rolled back"
        if self.gate_decision == "rejected":
            return "rejected"
        if CHALLENGER in self.aliases:
            return "challenger"
        if "etfuse.champion.from" in self.tags:
            return "retired"
        return "registered"


@dataclass(frozen=True)
class HistoryEntry:
    """One champion period: ``version`` served from ``start`` until ``end`` (None = still champion)."""

    version: int
    start: datetime
    end: datetime | None
    action: str                             # "gate" | "promote" | "rollback"
    set_by: str                             # actor: "user@host" or "flow:<name>"
    reason: str
    previous: int | None                    # the champion it replaced
    current: bool = False                   # the live ``champion`` alias points at this version now
    event_key: str = ""


# ----------------------------------------------------------------------------- helpers
def default_actor() -> str:
    """``$USER@hostname``, what the CLI records when no ``--by`` is given."""
    try:
        user = os.environ.get("USER") or getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def resolve_tracking_uri(settings: "Settings", explicit: str | None = None) -> str:
    """explicit > ``$MLFLOW_TRACKING_URI`` > ``settings.mlflow.tracking_uri`` > embedded SQLite."""
    if explicit:
        return explicit
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    return settings.mlflow_tracking_uri


def mask_uri(uri: str) -> str:
    """A URI fit for messages: passwords replaced by ***."""
    return re.sub(r"(//[^/@:]*):[^/@]*@", r"\1:***@", uri)


def _is_http(uri: str) -> bool:
    return uri.split(":", 1)[0].lower() in ("http", "https")


def heldout_fingerprint(heldout: pd.DataFrame) -> str:
    """sha256 over the sorted, distinct (station_id, YYYY-MM-DD) keys of held-out station-days.

    The same station-days give the same fingerprint whatever the row order, dtypes or extra
    columns; the gate uses it to prove that a challenger and the champion were scored alike.
    """
    missing = {"station_id", "date"} - set(heldout.columns)
    if missing:
        raise RegistryError(f"held-out table: expected columns station_id, date; missing {sorted(missing)}")
    dates = pd.to_datetime(heldout["date"]).dt.strftime("%Y-%m-%d")
    keys = sorted(set(zip(heldout["station_id"].astype(str), dates)))
    digest = hashlib.sha256()
    for station, day in keys:
        digest.update(f"{station},{day}\n".encode())
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")


def _key(name: str) -> str:
    """A valid MLflow param/metric/tag key (letters, digits, _ - . space /)."""
    key = _KEY_BAD.sub("_", str(name)).strip(" /") or "_"
    return key[:250]


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[_key(key)] = json.dumps(v, default=str)
        else:
            out[_key(key)] = str(v)
    return out


def _fmt_float(value: float) -> str:
    return repr(float(value))


def _as_float(text: str | None) -> float | None:
    if text in (None, "", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _requirements(*names: str) -> list[str]:
    reqs = []
    for name in names:
        version = _dist_version(name)
        reqs.append(f"{name}=={version}" if version else name)
    return reqs


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _is_not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _is_unreachable(exc: Exception) -> bool:
    text = str(exc)
    return any(marker in text for marker in ("failed with exception", "Max retries exceeded", "Connection refused",
                                             "could not connect", "could not translate host name",
                                             "unable to open database file"))


def _is_missing_alias(exc: Exception) -> bool:
    """MLflow reports a missing alias as INVALID_PARAMETER_VALUE "Registered model alias X not found."."""
    text = str(exc).lower()
    return _is_not_found(exc) or ("alias" in text and "not found" in text)


# ----------------------------------------------------------------------------- the registry
class ModelRegistry:
    """The GCN-GRU's registered model on MLflow (see the module docstring).

    ``tracking_uri`` overrides every other source of the URI (see resolve_tracking_uri); the model
    registry always lives at the tracking URI.
    """

    def __init__(self, settings: "Settings", *, tracking_uri: str | None = None) -> None:
        import mlflow  # noqa: F401 - fail here, not halfway through a run, when MLflow is missing
        from mlflow import MlflowClient

        self.settings = settings
        self.name = settings.mlflow.registered_model_name
        self.margin_mm = float(settings.mlflow.promotion_margin_mm)
        self.tracking_uri = resolve_tracking_uri(settings, tracking_uri)
        self.registry_uri = self.tracking_uri
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        self._experiment_id: str | None = None
        self._last_served: dict[str, tuple[Path, int]] = {}

    def __repr__(self) -> str:
        return f"ModelRegistry({self.name!r} at {mask_uri(self.tracking_uri)})"

    # -- where things live ----------------------------------------------------------------
    @property
    def artifact_location(self) -> str | None:
        """Artifact root for a new experiment; None = the server's default."""
        if self.settings.mlflow.artifact_location:
            return self.settings.mlflow.artifact_location
        if _is_http(self.tracking_uri) or self.tracking_uri.startswith("databricks"):
            return None
        return (self.settings.folder("mlflow") / "artifacts").resolve().as_uri()

    def cache_dir(self, version: int) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.name)
        return self.settings.folder("cache") / "models" / safe / str(int(version))

    def experiment_id(self) -> str:
        """The experiment ``settings.mlflow.experiment_name``, created on first use."""
        if self._experiment_id is not None:
            return self._experiment_id
        from mlflow.exceptions import MlflowException

        name = self.settings.mlflow.experiment_name
        exp = self._call(self.client.get_experiment_by_name, name)
        if exp is None:
            try:
                exp_id = self.client.create_experiment(name, artifact_location=self.artifact_location)
            except MlflowException as exc:  # created meanwhile by someone else
                exp = self._call(self.client.get_experiment_by_name, name)
                if exp is None:
                    raise RegistryError(f"cannot create MLflow experiment {name!r} at {mask_uri(self.tracking_uri)}: "
                                        f"{exc}") from exc
                exp_id = exp.experiment_id
        else:
            if exp.lifecycle_stage == "deleted":
                raise RegistryError(f"MLflow experiment {name!r} at {mask_uri(self.tracking_uri)} is deleted; "
                                    f"restore it (`mlflow experiments restore --experiment-id {exp.experiment_id}`)"
                                    " or set mlflow.experiment_name to another name")
            exp_id = exp.experiment_id
        self._experiment_id = exp_id
        return exp_id

    def _call(self, fn, *args, **kwargs):
        """Call the MLflow client.  "Not found" errors pass through (callers turn them into clear
        messages); an unreachable MLflow becomes RegistryUnavailableError, any other MLflow error a
        RegistryError, both naming the (password-masked) tracking URI."""
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            if _is_missing_alias(exc):
                raise
            if _is_unreachable(exc):
                raise RegistryUnavailableError(f"cannot reach MLflow at {mask_uri(self.tracking_uri)}: {exc}") \
                    from exc
            raise RegistryError(f"MLflow at {mask_uri(self.tracking_uri)}: {exc}") from exc
        except OSError as exc:  # ConnectionError included
            raise RegistryUnavailableError(f"cannot reach MLflow at {mask_uri(self.tracking_uri)}: {exc}") from exc

    @contextlib.contextmanager
    def _fluent(self) -> Iterator[None]:
        """MLflow's log_model/start_run use the process-wide URIs: point them here for a while."""
        import mlflow
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        with _fluent_lock:
            # set_tracking_uri/set_registry_uri also export MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI to
            # os.environ; put back exactly what was there (an exported URI would override settings later)
            env_before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
            prev_tracking = getattr(tracking_utils, "_tracking_uri", None)
            prev_registry = getattr(registry_utils, "_registry_uri", None)
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.registry_uri)
            try:
                yield
            finally:
                mlflow.set_tracking_uri(prev_tracking)
                mlflow.set_registry_uri(prev_registry)
                for key, value in env_before.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

    # -- logging and registering ------------------------------------------------------------
    def log_and_register(self, record: TrainingRecord) -> ModelVersionInfo:
        """One MLflow run with everything in ``record``; registers its ONNX model as a new version,
        tags the version with the metrics, data window, fingerprints and code version, and points
        the ``challenger`` alias at it."""
        import onnx

        onnx_path = Path(record.onnx_path)
        self._check_record(record, onnx_path)
        onnx_model = onnx.load(str(onnx_path))
        onnx_signature = self._check_onnx(onnx_model, onnx_path, record.onnx_example)
        heldout_sha = heldout_fingerprint(record.heldout) if record.heldout is not None else None
        window = {k: str(v) for k, v in record.data_window.items()}

        params = _flatten(record.params)
        params.update({f"data_window.{_key(k)}": v for k, v in window.items()})
        params.update({f"input_fingerprint.{_key(k)}": str(v) for k, v in record.input_fingerprints.items()})
        params["code_version"] = record.code_version
        params = {k: v[:6000] for k, v in params.items()}
        metrics = {_key(k): float(v) for k, v in record.metrics.items()}

        version_tags = {
            "etfuse.code_version": record.code_version,
            "etfuse.onnx_sha256": _sha256_file(onnx_path),
            "etfuse.onnx_inputs": json.dumps({s.name: list(s.shape) for s in onnx_signature.inputs.inputs}),
            **{f"etfuse.data_window.{_key(k)}": v for k, v in window.items()},
            **{f"etfuse.fingerprint.{_key(k)}": str(v) for k, v in record.input_fingerprints.items()},
            **{METRIC_PREFIX + k: _fmt_float(v) for k, v in metrics.items()},
        }
        if heldout_sha is not None:
            version_tags[TAG_HELDOUT] = heldout_sha
            version_tags["etfuse.heldout_station_days"] = str(
                len(record.heldout[["station_id", "date"]].drop_duplicates()))
        run_name = record.run_name or f"gcn-gru {window.get('start', '?')}..{window.get('end', '?')}"

        from mlflow.exceptions import MlflowException

        try:
            version, run_id = self._log_run(record, onnx_model, onnx_signature, params, metrics, version_tags, window,
                                            heldout_sha, run_name)
        except MlflowException as exc:
            error = RegistryUnavailableError if _is_unreachable(exc) else RegistryError
            raise error(f"logging the training run to MLflow at {mask_uri(self.tracking_uri)} failed: {exc}") from exc
        log.info("registered %s version %d from run %s (alias %s)", self.name, version, run_id, CHALLENGER)
        return self.version(version)

    def _log_run(self, record: TrainingRecord, onnx_model, onnx_signature, params: dict[str, str],
                 metrics: dict[str, float], version_tags: dict[str, str], window: dict[str, str],
                 heldout_sha: str | None, run_name: str) -> tuple[int, str]:
        import mlflow
        import mlflow.onnx

        with self._fluent(), _quiet_downloads(), tempfile.TemporaryDirectory(prefix="etfuse-registry-") as tmp:
            if mlflow.active_run() is not None:
                raise RegistryError(f"an MLflow run ({mlflow.active_run().info.run_id}) is already active in this "
                                    "process; log_and_register starts its own run")
            experiment_id = self.experiment_id()
            norm_file = Path(tmp) / "normalisation.json"
            norm_file.write_text(json.dumps(record.normalisation, indent=2, default=str))
            with mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                                  tags={"etfuse.code_version": record.code_version,
                                        "etfuse.registered_model": self.name}) as run:
                run_id = run.info.run_id
                mlflow.log_params(params)
                if metrics:
                    mlflow.log_metrics(metrics)
                if record.metric_history:
                    from mlflow.entities import Metric
                    now_ms = int(_utc_now().timestamp() * 1000)
                    curve = [Metric(_key(k), float(v), now_ms, step) for k, values in record.metric_history.items()
                             for step, v in enumerate(values)]
                    for start in range(0, len(curve), 1000):
                        self.client.log_batch(run_id, metrics=curve[start:start + 1000])
                mlflow.log_dict({"params": record.params, "metrics": record.metrics, "data_window": window,
                                 "input_fingerprints": record.input_fingerprints, "code_version": record.code_version,
                                 "heldout_sha256": heldout_sha}, "etfuse_record.json")
                mlflow.log_text(record.settings_yaml, "config/settings.yaml")
                mlflow.log_artifact(str(norm_file))
                for name, table in record.tables.items():
                    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
                    mlflow.log_text(table.to_csv(index=False), f"evaluation/{safe}.csv")
                if record.heldout is not None:
                    keys = record.heldout[["station_id", "date"]].drop_duplicates()
                    mlflow.log_text(keys.to_csv(index=False), "evaluation/heldout_station_days.csv")
                for plot in record.plots:
                    mlflow.log_artifact(str(plot), artifact_path="plots")

                torch_format = self._log_torch(record.torch_model, record.torch_example)
                mlflow.set_tag("etfuse.torch_format", torch_format)

                big = onnx_model.ByteSize() > 1_500_000_000
                feed = {k: np.asarray(v) for k, v in record.onnx_example.items()}
                # MLflow stores the example as JSON and replays it through pyfunc: only small ones
                small = sum(a.nbytes for a in feed.values()) <= EXAMPLE_MAX_BYTES
                onnx_info = mlflow.onnx.log_model(
                    onnx_model, name=ONNX_MODEL_NAME, signature=onnx_signature, input_example=feed if small else None,
                    onnx_execution_providers=["CPUExecutionProvider"], save_as_external_data=big,
                    pip_requirements=_requirements("onnx", "onnxruntime", "numpy"),
                    extra_files=[str(norm_file), *(str(p) for p in record.extra_files)])

                mv = mlflow.register_model(onnx_info.model_uri, self.name, tags=version_tags)
                version = int(mv.version)  # int over SQLite, str over HTTP
                description = (f"GCN-GRU ONNX, data {window.get('start', '?')}..{window.get('end', '?')}"
                               f" (train until {window.get('train_end', '?')}), code {record.code_version}")
                if "heldout_rmse" in metrics:
                    description += f", held-out RMSE {metrics['heldout_rmse']:.3f} mm/d"
                self.client.update_model_version(self.name, str(version), description=description)
                self.client.set_registered_model_alias(self.name, CHALLENGER, str(version))
                mlflow.set_tag("etfuse.model_version", str(version))
        return version, run_id

    @staticmethod
    def _check_record(record: TrainingRecord, onnx_path: Path) -> None:
        if not onnx_path.is_file():
            raise RegistryError(f"ONNX file {onnx_path} does not exist")
        for plot in record.plots:
            if not Path(plot).is_file():
                raise RegistryError(f"plot {plot} does not exist")
        if not record.onnx_example:
            raise RegistryError("onnx_example is empty: give one array per ONNX input, it defines the signature")
        for key, value in record.metrics.items():
            if not isinstance(value, (int, float, np.floating, np.integer)):
                raise RegistryError(f"metric {key!r} must be a number, got {value!r}")
        if record.heldout is not None:
            heldout_fingerprint(record.heldout)  # validates the columns

    @staticmethod
    def _check_onnx(model, path: Path, example: dict[str, np.ndarray]):
        """Run the ONNX model on its example on CPU and build its signature from the graph.

        Dimensions that are symbolic in the graph (e.g. ``n``) become -1 in the signature.
        """
        import onnxruntime as ort
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        graph = model.graph
        initialisers = {i.name for i in graph.initializer}
        graph_inputs = [vi for vi in graph.input if vi.name not in initialisers]
        expected = [vi.name for vi in graph_inputs]
        if set(expected) != set(example):
            raise RegistryError(f"{path}: the example feed has inputs {sorted(example)}; the ONNX model expects "
                                f"{expected}")
        feed = {k: np.asarray(v) for k, v in example.items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            outputs = session.run(None, feed)
        except Exception as exc:  # noqa: BLE001 - any onnxruntime failure means "do not register"
            raise RegistryError(f"{path}: the ONNX model does not run on its example feed on CPU: {exc}") from exc

        def spec(vi, array: np.ndarray) -> TensorSpec:
            dims = list(vi.type.tensor_type.shape.dim) if vi.type.tensor_type.HasField("shape") else []
            shape = list(array.shape)
            if len(dims) == len(shape):
                shape = [s if d.HasField("dim_value") else -1 for s, d in zip(shape, dims)]
            return TensorSpec(np.dtype(array.dtype), tuple(shape), vi.name)

        inputs = Schema([spec(vi, feed[vi.name]) for vi in graph_inputs])
        outs = Schema([spec(vi, np.asarray(arr)) for vi, arr in zip(graph.output, outputs)])
        return ModelSignature(inputs=inputs, outputs=outs)

    @staticmethod
    def _log_torch(model, example: tuple | None) -> str:
        """Log a CPU copy of the PyTorch model: ``pt2`` (torch.export, the MLflow 3 default) when an
        example is given and the model exports, else ``pickle``.  Returns the format used."""
        import mlflow.pytorch
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        cpu_model = copy.deepcopy(model).to("cpu").eval()
        reqs = _requirements("torch", "numpy")
        if example is not None:
            arrays = tuple(x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
                           for x in (example if isinstance(example, (tuple, list)) else (example,)))
            try:
                with torch.no_grad():
                    out = cpu_model(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
                outs = out if isinstance(out, (tuple, list)) else (out,)
                in_specs = [TensorSpec(a.dtype, (-1, *a.shape[1:]) if a.ndim else ()) for a in arrays]
                out_specs = [TensorSpec(np.dtype(str(o.dtype).replace("torch.", "")), (-1, *o.shape[1:]))
                             for o in outs]
                signature = ModelSignature(inputs=Schema(in_specs), outputs=Schema(out_specs))
                mlflow.pytorch.log_model(cpu_model, name=TORCH_MODEL_NAME, input_example=arrays, signature=signature,
                                         serialization_format="pt2", pip_requirements=reqs)
                return "pt2"
            except Exception as exc:  # noqa: BLE001 - torch.export cannot trace every model; keep a pickle
                log.warning("the PyTorch model does not export to pt2 (%s); logging it as pickle", exc)
        mlflow.pytorch.log_model(cpu_model, name=TORCH_MODEL_NAME, serialization_format="pickle",
                                 pip_requirements=reqs)
        return "pickle"

    # -- reading ----------------------------------------------------------------------------
    def _registered_model(self):
        try:
            return self._call(self.client.get_registered_model, self.name)
        except Exception as exc:
            if _is_not_found(exc):
                raise RegistryError(f"registered model {self.name!r} does not exist at {mask_uri(self.tracking_uri)} "
                                    "yet: no training run has registered a version") from exc
            raise

    def _info(self, mv, aliases: tuple[str, ...] | None = None) -> ModelVersionInfo:
        tags = dict(mv.tags or {})
        metrics = {k[len(METRIC_PREFIX):]: v for k, t in tags.items() if k.startswith(METRIC_PREFIX)
                   if (v := _as_float(t)) is not None}
        created = (datetime.fromtimestamp(mv.creation_timestamp / 1000, timezone.utc)
                   if mv.creation_timestamp else None)
        return ModelVersionInfo(name=self.name, version=int(mv.version), run_id=mv.run_id or None,
                                model_uri=f"models:/{self.name}/{int(mv.version)}", source=mv.source or "",
                                aliases=tuple(sorted(aliases if aliases is not None else (mv.aliases or []))),
                                tags=tags, metrics=metrics, created_at=created, description=mv.description or "")

    def versions(self) -> list[ModelVersionInfo]:
        """Every version, oldest first, with aliases, tags and metrics (two registry calls)."""
        rm = self._registered_model()
        by_version: dict[int, list[str]] = {}
        for alias, v in (rm.aliases or {}).items():
            by_version.setdefault(int(v), []).append(alias)
        escaped = self.name.replace("'", "\\'")
        found = self._call(self.client.search_model_versions, f"name = '{escaped}'")
        # search_model_versions leaves aliases empty: they come from the registered model
        infos = [self._info(mv, tuple(by_version.get(int(mv.version), ()))) for mv in found]
        return sorted(infos, key=lambda i: i.version)

    def version(self, v: int) -> ModelVersionInfo:
        """One version with its tags and metrics; RegistryError naming the versions if unknown."""
        try:
            mv = self._call(self.client.get_model_version, self.name, str(int(v)))
        except Exception as exc:
            if _is_not_found(exc):
                self._raise_unknown_version(v, exc)
            raise
        return self._info(mv)

    def _raise_unknown_version(self, v: int, exc: Exception | None = None):
        versions = [i.version for i in self.versions()]  # raises if the model itself does not exist
        listed = ", ".join(str(x) for x in versions) or "none"
        raise RegistryError(f"no version {v} of registered model {self.name!r}; versions: {listed}") from exc

    def _alias_mv(self, alias: str):
        """The ModelVersion behind an alias, or None when the alias (or the model) does not exist."""
        try:
            return self._call(self.client.get_model_version_by_alias, self.name, alias)
        except Exception as exc:
            if _is_missing_alias(exc):
                return None
            raise

    def alias_version(self, alias: str) -> int | None:
        """The version an alias points at, or None (one registry call)."""
        mv = self._alias_mv(alias)
        return None if mv is None else int(mv.version)

    def champion(self) -> ModelVersionInfo | None:
        """The version behind the ``champion`` alias, or None when there is no champion (or model) yet."""
        mv = self._alias_mv(CHAMPION)
        return None if mv is None else self._info(mv)

    def challenger(self) -> ModelVersionInfo | None:
        """The version behind the ``challenger`` alias, or None."""
        mv = self._alias_mv(CHALLENGER)
        return None if mv is None else self._info(mv)

    # -- gate, promotion, rollback --------------------------------------------------------------
    def gate(self, v: int, *, candidate_rmse: float, champion_rmse: float | None, gleam_rmse: float,
             era5land_rmse: float, actor: str, heldout_sha256: str | None = None,
             candidate_predictions=None, comparisons=()) -> GateDecision:
        """Decide whether version ``v`` replaces the champion (training/gate.py), record the decision,
        the numbers and the reasons as ``etfuse.gate.*`` tags on ``v``, and promote it when it passes.

        All RMSEs [mm/day] must come from the same held-out station-days.  ``champion_rmse`` is the
        current champion scored on them; it may be None only when there is no champion yet.  When
        ``heldout_sha256`` (heldout_fingerprint of the days the numbers come from) is given, it must
        equal the fingerprint recorded from ``v``'s run, else the gate fails.  When
        ``candidate_predictions`` (the candidate's ET on the held-out station-days) is given, any
        NaN or negative value fails the gate (training.gate.check_predictions), and so does a
        constant.  ``comparisons`` (training.gate.Comparison: paired RMSE differences with the
        champion and the strongest baseline, with 95 % block-bootstrap intervals) must each lie
        entirely below 0; they are recorded as ``etfuse.gate.vs.<reference>`` tags.
        """
        info = self.version(v)
        champion = self.alias_version(CHAMPION)
        if champion == info.version:
            raise RegistryError(f"version {v} is already the champion of {self.name!r}; nothing to gate")
        if champion is not None and champion_rmse is None:
            raise RegistryError(f"version {champion} is the champion of {self.name!r}: pass its RMSE on the same "
                                f"held-out station-days as champion_rmse")
        recorded = info.tags.get(TAG_HELDOUT)
        matches = None if heldout_sha256 is None or recorded is None else heldout_sha256 == recorded
        checks = evaluate_gate(candidate_rmse, champion_rmse, gleam_rmse, era5land_rmse, margin_mm=self.margin_mm,
                               champion_version=champion, heldout_matches=matches,
                               candidate_predictions=candidate_predictions, comparisons=comparisons)
        decision = GateDecision(
            version=info.version, promoted=all(c.passed for c in checks), candidate_rmse=float(candidate_rmse),
            champion_rmse=None if champion_rmse is None else float(champion_rmse), champion_version=champion,
            gleam_rmse=float(gleam_rmse), era5land_rmse=float(era5land_rmse), margin_mm=self.margin_mm,
            checks=tuple(checks), actor=actor, decided_at=_utc_now(), heldout_sha256=heldout_sha256 or recorded)
        tags = {
            "decision": decision.decision,
            "candidate_rmse": _fmt_float(decision.candidate_rmse),
            "champion_rmse": "none" if decision.champion_rmse is None else _fmt_float(decision.champion_rmse),
            "champion_version": "none" if champion is None else str(champion),
            "gleam_rmse": _fmt_float(decision.gleam_rmse),
            "era5land_rmse": _fmt_float(decision.era5land_rmse),
            "margin_mm": _fmt_float(decision.margin_mm),
            "reasons": "\n".join(decision.reasons),
            "checks": json.dumps([{"name": c.name, "passed": c.passed, "text": c.text} for c in checks]),
            "by": actor,
            "at": decision.decided_at.isoformat(),
            "heldout_sha256": decision.heldout_sha256 or "none",
            **{f"vs.{_key(c.reference)}": f"{c.diff:+.4f} [{c.lo:+.4f}, {c.hi:+.4f}]" for c in comparisons},
        }
        for key, value in tags.items():  # recorded before any alias moves: the decision survives a crash
            self._call(self.client.set_model_version_tag, self.name, str(info.version), GATE_PREFIX + key, value)
        if decision.promoted:
            self._set_champion(info.version, action="gate", actor=actor, reason=decision.summary())
        log.info("gate: %s", decision.summary())
        return decision

    def promote(self, v: int, *, actor: str, reason: str) -> None:
        """Make version ``v`` the champion by hand (no gate); recorded in the history."""
        info = self.version(v)
        if self.alias_version(CHAMPION) == info.version:
            raise RegistryError(f"version {v} is already the champion of {self.name!r}")
        self._set_champion(info.version, action="promote", actor=actor, reason=reason)

    def rollback(self, *, to: int | None = None, actor: str, reason: str) -> int:
        """Move ``champion`` back: to version ``to``, or (None) to the latest earlier champion that has
        not itself been rolled back.  The version rolled back from is tagged ``etfuse.rolled_back``
        so repeated rollbacks walk further back.  Returns the new champion."""
        current = self.alias_version(CHAMPION)
        if current is None:
            raise RegistryError(f"registered model {self.name!r} has no champion to roll back from")
        if to is None:
            target = self._previous_champion(current)
            if target is None:
                raise RegistryError(f"no earlier champion of {self.name!r} to roll back to from version {current} "
                                    f"(see `etfuse models history`); give one with --to")
        else:
            target = self.version(to).version
            if target == current:
                raise RegistryError(f"version {target} is already the champion of {self.name!r}")
        now = _utc_now().isoformat()
        for key, value in ((TAG_ROLLED_BACK, "true"), ("etfuse.rolled_back.at", now), ("etfuse.rolled_back.by", actor),
                           ("etfuse.rolled_back.reason", reason), ("etfuse.rolled_back.to", str(target))):
            self._call(self.client.set_model_version_tag, self.name, str(current), key, value)
        self._set_champion(target, action="rollback", actor=actor, reason=reason, previous=current)
        return target

    def _previous_champion(self, current: int) -> int | None:
        infos = {i.version: i for i in self.versions()}
        for entry in reversed(self._events()):
            v = entry["version"]
            if v != current and v in infos and not infos[v].rolled_back:
                return v
        return None

    def _set_champion(self, v: int, *, action: str, actor: str, reason: str, previous: int | None = None) -> None:
        """Move the alias, then record the event (append-only, unique key) and mirror it on versions."""
        if previous is None:
            previous = self.alias_version(CHAMPION)
        self._call(self.client.set_registered_model_alias, self.name, CHAMPION, str(v))
        at = _utc_now()
        key = f"{EVENT_PREFIX}{at:%Y%m%dT%H%M%S%fZ}.{uuid.uuid4().hex[:8]}"
        event = {"version": v, "previous": previous, "at": at.isoformat(), "action": action, "by": actor,
                 "reason": reason}
        self._call(self.client.set_registered_model_tag, self.name, key, json.dumps(event))
        mirror = {"etfuse.champion.from": at.isoformat(), "etfuse.champion.set_by": actor,
                  "etfuse.champion.action": action, "etfuse.champion.reason": reason[:5000]}
        for k, value in mirror.items():
            self._call(self.client.set_model_version_tag, self.name, str(v), k, value)
        with contextlib.suppress(Exception):  # it may never have been rolled back
            self.client.delete_model_version_tag(self.name, str(v), TAG_ROLLED_BACK)
        if previous is not None and previous != v:
            self._call(self.client.set_model_version_tag, self.name, str(previous), "etfuse.champion.until",
                       at.isoformat())
        if self.alias_version(CHALLENGER) == v:
            self._call(self.client.delete_registered_model_alias, self.name, CHALLENGER)
        log.info("%s: champion is now version %d (%s by %s; was %s): %s", self.name, v, action, actor, previous,
                 reason)
        self._announce_champion(event)

    def _announce_champion(self, event: dict) -> None:
        """A ``champion_changed`` alert: every promotion (gate or by hand) and rollback passes here, so
        people learn that the product's model changed, by whom and why.  Never raises: the alias has moved."""
        if event["previous"] == event["version"]:
            return
        try:
            dispatcher = AlertDispatcher(self.settings)
            was = "none" if event["previous"] is None else f"v{event['previous']}"
            dispatcher.send(Alert(
                severity="warning", source="model", kind="champion_changed", checks=[event["action"]],
                summary=(f"{self.name}: champion {was} -> v{event['version']} ({event['action']} by {event['by']}): "
                         f"{event['reason']}"),
                details={**event, "model": self.name}))
            dispatcher.flush()
        except Exception as exc:  # noqa: BLE001 - an alert problem must not undo or fail a promotion
            log.warning("champion_changed alert not sent: %s: %s", type(exc).__name__, exc)

    # -- history ----------------------------------------------------------------------------
    def _events(self) -> list[dict]:
        rm = self._registered_model()
        events = []
        for key, value in (rm.tags or {}).items():
            if not key.startswith(EVENT_PREFIX):
                continue
            try:
                event = json.loads(value)
                event["version"] = int(event["version"])
                event["_at"] = _parse_time(event["at"])
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring an unreadable champion event %s=%r", key, value)
                continue
            event["_key"] = key
            events.append(event)
        events.sort(key=lambda e: (e["_at"], e["_key"]))
        return events

    def history(self) -> list[HistoryEntry]:
        """Champion periods, oldest first: which version, from when until when, set by whom, why."""
        events = self._events()
        live = self.alias_version(CHAMPION) if events else None
        entries = []
        for i, e in enumerate(events):
            end = events[i + 1]["_at"] if i + 1 < len(events) else None
            entries.append(HistoryEntry(version=e["version"], start=e["_at"], end=end, action=e.get("action", "?"),
                                        set_by=e.get("by", "?"), reason=e.get("reason", ""),
                                        previous=e.get("previous"), current=end is None and e["version"] == live,
                                        event_key=e["_key"]))
        return entries

    # -- serving ----------------------------------------------------------------------------
    def resolve(self, alias_or_version: str | int = CHAMPION):
        """The MLflow ModelVersion behind an alias or a version number (one registry call)."""
        ref = alias_or_version
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            try:
                return self._call(self.client.get_model_version, self.name, str(int(ref)))
            except Exception as exc:
                if _is_not_found(exc):
                    self._raise_unknown_version(int(ref), exc)
                raise
        mv = self._alias_mv(str(ref))
        if mv is None:
            self._registered_model()  # a missing model says so
            raise RegistryError(f"registered model {self.name!r} has no {ref!r} alias"
                                + (" (no version has passed the gate or been promoted yet)" if ref == CHAMPION else ""))
        return mv

    def onnx_model_path(self, alias_or_version: str | int = CHAMPION) -> tuple[Path, int]:
        """The local ONNX file of a version (default: the champion) and its version number.

        One registry call resolves the alias; the model is downloaded once per version into
        ``$ETFUSE_HOME/cache/models/<name>/<version>/`` (checked against the version's run id, so a
        cache filled from another registry is not reused) and read from there afterwards.  When MLflow
        cannot be reached, the last result this object resolved for the same reference is returned
        (with a warning) so serving survives a registry outage; a new process that has resolved
        nothing yet falls back to what the last process on this host resolved (recorded beside the
        cache, used only while its download is complete); without either the error is raised.
        """
        key = str(alias_or_version)
        try:
            mv = self.resolve(alias_or_version)
        except RegistryUnavailableError as exc:
            last = self._last_served.get(key) or self._last_served_on_disk(key)
            if last is None:
                raise
            log.warning("%s; serving the last resolved %s (version %d) until MLflow answers again", exc, key, last[1])
            return last
        version = int(mv.version)
        folder = self._cached_model(version, mv)
        result = (folder / self._read_marker(folder)["onnx"], version)
        if self._last_served.get(key) != result:
            self._remember_on_disk(key, version)
        self._last_served[key] = result
        return result

    def _last_served_file(self, key: str) -> Path:
        return self.cache_dir(0).parent / f".last-served-{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}.json"

    def _remember_on_disk(self, key: str, version: int) -> None:
        path = self._last_served_file(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"version": version, "tracking_uri": mask_uri(self.tracking_uri),
                                       "at": _utc_now().isoformat()}))
            os.replace(tmp, path)
        except OSError as exc:  # a read-only or full cache must not stop serving
            log.warning("cannot record the served version in %s: %s", path, exc)

    def _last_served_on_disk(self, key: str) -> tuple[Path, int] | None:
        try:
            version = int(json.loads(self._last_served_file(key).read_text())["version"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        folder = self.cache_dir(version)
        marker = self._read_marker(folder)
        if not marker or not (folder / marker.get("onnx", "model.onnx")).is_file():
            return None
        return folder / marker["onnx"], version

    def model_dir(self, alias_or_version: str | int = CHAMPION) -> tuple[Path, int]:
        """The local folder of the registered MLflow model (MLmodel, model.onnx, extra_files/ ...)."""
        mv = self.resolve(alias_or_version)
        return self._cached_model(int(mv.version), mv), int(mv.version)

    def normalisation(self, alias_or_version: str | int = CHAMPION) -> dict:
        """The normalisation stats JSON that was logged with the version's ONNX model."""
        folder, _ = self.model_dir(alias_or_version)
        path = folder / "extra_files" / "normalisation.json"
        if not path.is_file():
            raise RegistryError(f"{path} is missing from the registered model")
        return json.loads(path.read_text())

    @staticmethod
    def _read_marker(folder: Path) -> dict:
        try:
            return json.loads((folder / _CACHE_MARKER).read_text())
        except (OSError, ValueError):
            return {}

    def _cached_model(self, version: int, mv) -> Path:
        folder = self.cache_dir(version)
        identity = {"run_id": mv.run_id or "", "source": mv.source or ""}
        marker = self._read_marker(folder)
        if marker and all(marker.get(k) == v for k, v in identity.items()) and (folder / marker["onnx"]).is_file():
            return folder
        import yaml
        from mlflow.artifacts import download_artifacts

        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".partial", dir=folder.parent))
        try:
            # not "models:/name/version": MLflow resolves that against the process-wide registry URI
            location = self._call(self.client.get_model_version_download_uri, self.name, str(version))
            with _quiet_downloads():
                # the model folder lands inside dst_path under its own base name ("artifacts")
                got = Path(download_artifacts(artifact_uri=location, dst_path=str(partial),
                                              tracking_uri=self.tracking_uri, registry_uri=self.registry_uri))
            if not (got / "MLmodel").is_file():
                raise RegistryError(f"version {version} of {self.name!r}: no MLmodel file at {location}")
            mlmodel = yaml.safe_load((got / "MLmodel").read_text())
            onnx_name = (mlmodel.get("flavors", {}).get("onnx", {}) or {}).get("data", "model.onnx")
            if not (got / onnx_name).is_file():
                raise RegistryError(f"version {version} of {self.name!r} holds no ONNX model ({onnx_name} missing)")
            (got / _CACHE_MARKER).write_text(json.dumps({**identity, "onnx": onnx_name, "version": version,
                                                         "downloaded_at": _utc_now().isoformat()}))
            for _attempt in range(3):
                try:
                    os.rename(got, folder)
                    return folder
                except OSError:  # the folder exists: filled concurrently, or stale
                    existing = self._read_marker(folder)
                    if existing and all(existing.get(k) == v for k, v in identity.items()):
                        return folder
                    stale = folder.with_name(f".{version}.{uuid.uuid4().hex[:8]}.stale")
                    with contextlib.suppress(OSError):
                        os.rename(folder, stale)
                        shutil.rmtree(stale, ignore_errors=True)
            raise RegistryError(f"cannot place the downloaded model in {folder}")
        finally:
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True)


_env_lock = threading.RLock()


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No tqdm progress bars from MLflow's artifact download in the logs of a serving process."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    with _env_lock:
        before = os.environ.get(key)
        os.environ[key] = "false"
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = before
