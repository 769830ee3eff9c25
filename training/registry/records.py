"""What the registry stores and returns: the training record, version and history entries, the
names of its tags and aliases, and its errors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from etfuse.errors import EtfuseError

if TYPE_CHECKING:  # pragma: no cover
    import torch

CHAMPION = "champion"
CHALLENGER = "challenger"
EVENT_PREFIX = "etfuse.champion_event."
METRIC_PREFIX = "etfuse.metric."
GATE_PREFIX = "etfuse.gate."
TAG_ROLLED_BACK = "etfuse.rolled_back"
TAG_HELDOUT = "etfuse.heldout_sha256"
ONNX_MODEL_NAME = "onnx"
TORCH_MODEL_NAME = "pytorch"
#: ONNX examples larger than this [bytes] are not stored with the model (the signature still is)
EXAMPLE_MAX_BYTES = 1_000_000


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
