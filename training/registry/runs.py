"""Logging a training run to MLflow and registering its ONNX model as a new version."""

from __future__ import annotations

import copy
import json
import logging
import re
import tempfile
from pathlib import Path

import numpy as np

from etfuse.clock import utcnow
from etfuse.sources.common import file_sha256
from training.registry.client import (_flatten, _fmt_float, _is_unreachable, _key, _quiet_downloads, _requirements,
                                      mask_uri)
from training.registry.records import (CHALLENGER, EXAMPLE_MAX_BYTES, METRIC_PREFIX, ONNX_MODEL_NAME, TAG_HELDOUT,
                                       TORCH_MODEL_NAME, ModelVersionInfo, RegistryError, RegistryUnavailableError,
                                       TrainingRecord, heldout_fingerprint)

log = logging.getLogger(__name__)


class RunLogging:
    """Mixin of ModelRegistry: one training run -> one MLflow run and one registered version."""

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
            "etfuse.onnx_sha256": file_sha256(onnx_path),
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
                    now_ms = int(utcnow().timestamp() * 1000)
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
