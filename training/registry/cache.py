"""The serving side of the registry: resolve an alias, download a version once into a local cache,
and keep serving the last resolved version while MLflow cannot be reached."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from etfuse.clock import utcnow
from etfuse.tempfiles import write_atomic
from training.registry.client import _is_not_found, _quiet_downloads, mask_uri
from training.registry.records import CHAMPION, RegistryError, RegistryUnavailableError

log = logging.getLogger(__name__)

_CACHE_MARKER = ".etfuse-model.json"


class ServingCache:
    """Mixin of ModelRegistry: the local ONNX file (and folder) of an alias or version."""

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
            write_atomic(path, json.dumps({"version": version, "tracking_uri": mask_uri(self.tracking_uri),
                                           "at": utcnow().isoformat()}))
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
                                                         "downloaded_at": utcnow().isoformat()}))
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
