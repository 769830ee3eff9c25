"""The connection to MLflow and reading the registered model: versions, aliases, the champion.

The other parts of the registry (runs.py, lifecycle.py, cache.py) are mixins on RegistryClient;
training.registry.ModelRegistry puts them together.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from training.registry.records import (CHALLENGER, CHAMPION, METRIC_PREFIX, ModelVersionInfo, RegistryError,
                                       RegistryUnavailableError)

if TYPE_CHECKING:  # pragma: no cover
    from etfuse.settings import Settings

log = logging.getLogger(__name__)

_fluent_lock = threading.RLock()


# ----------------------------------------------------------------------------- helpers
def resolve_tracking_uri(settings: Settings, explicit: str | None = None) -> str:
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



class RegistryClient:
    """The connection to the GCN-GRU's registered model on MLflow (see training.registry).

    ``tracking_uri`` overrides every other source of the URI (see resolve_tracking_uri); the model
    registry always lives at the tracking URI.
    """

    def __init__(self, settings: Settings, *, tracking_uri: str | None = None) -> None:
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
