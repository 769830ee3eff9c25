"""The champion's ONNX model over the whole target grid, tile by tile.

* The model is resolved through the registry by alias on every request (one cheap registry call)
  and its session is cached per version, so a rollback takes effect for the next request.
* onnxruntime-gpu silently falls back to the CPU when CUDA is not usable; here the providers that
  really run are checked after the session is built, and a GPU that was asked for but is not
  there is an error unless ``serving.allow_cpu_fallback`` is set.
* The grid is cut into tiles with a halo as wide as the model's receptive field (from the ONNX
  metadata), so every core cell sees exactly the neighbours it would see on the whole grid:
  tiled output equals untiled output, and memory is bounded by the tile size.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from etfuse.errors import EtfuseError
from etfuse.interval import BOUND_NAMES, IntervalCalibration, IntervalError, apply_interval
from etfuse.settings import Settings
from training.serving_parts import SERVING_PARTS

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class PredictorError(EtfuseError):
    """The model cannot be served as asked (no champion, GPU missing, incompatible inputs)."""


class NoModelError(PredictorError):
    """No model has been registered or promoted to champion yet (not an outage: train one)."""


@dataclass(frozen=True)
class Tile:
    """Core rows/cols of the output and the slice of input (core plus halo) that produces them."""

    core: tuple[slice, slice]
    outer: tuple[slice, slice]

    @property
    def inner(self) -> tuple[slice, slice]:
        """The core's position inside the outer block."""
        r, c = self.core
        ro, co = self.outer
        return (slice(r.start - ro.start, r.stop - ro.start), slice(c.start - co.start, c.stop - co.start))


def tiles(shape: tuple[int, int], size: int, halo: int) -> Iterator[Tile]:
    """Cover ``shape`` with ``size x size`` cores, each read with ``halo`` cells around it (clipped
    at the grid's edge, where the whole-grid graph ends too)."""
    rows, cols = shape
    for r0 in range(0, rows, size):
        for c0 in range(0, cols, size):
            r1, c1 = min(r0 + size, rows), min(c0 + size, cols)
            yield Tile((slice(r0, r1), slice(c0, c1)),
                       (slice(max(0, r0 - halo), min(rows, r1 + halo)), slice(max(0, c0 - halo), min(cols, c1 + halo))))


@dataclass
class LoadedModel:
    version: int
    path: Path
    spatial: object                   # onnxruntime sessions of the two serving graphs
    temporal: object
    providers: list[str]
    window_days: int
    features: list[str]
    receptive_field: int
    hidden: int
    #: the temporal graph's outputs: ``et`` and, for models with an interval, ``et_q05``/``et_q95``
    outputs: tuple[str, ...] = ("et",)
    #: the scale factors of the raw quantiles (None: the model has no interval)
    interval: IntervalCalibration | None = None

    @property
    def execution_provider(self) -> str:
        """The onnxruntime execution provider that runs the model (``CUDAExecutionProvider`` or
        ``CPUExecutionProvider``): the first of the session's active providers, which onnxruntime
        tries first for every node.  Recorded with each product day it computes."""
        return self.providers[0]


def _session(path: Path, *, device: str, allow_cpu_fallback: bool, threads: int):
    import onnxruntime as ort
    available = ort.get_available_providers()
    wanted = [CUDA, CPU] if device in ("cuda", "auto") and CUDA in available else [CPU]
    if device == "cuda" and CUDA not in available:
        if not allow_cpu_fallback:
            raise PredictorError(f"serving.device is 'cuda' but this onnxruntime has no CUDA provider "
                                 f"(available: {available}); install onnxruntime-gpu on a CUDA host, or set "
                                 "serving.allow_cpu_fallback: true to run on the CPU")
        log.warning("serving.device is 'cuda' but this onnxruntime has no CUDA provider (available: %s); "
                    "running on the CPU as serving.allow_cpu_fallback allows", available)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=wanted)
    active = session.get_providers()
    if device == "cuda" and CUDA not in active:
        if not allow_cpu_fallback:
            raise PredictorError(f"serving.device is 'cuda' but onnxruntime runs {active} (CUDA provider present "
                                 "but not usable: driver, CUDA or cuDNN missing?); refusing to fall back silently; "
                                 "set serving.allow_cpu_fallback: true to accept the CPU")
        log.warning("serving.device is 'cuda' but onnxruntime runs %s; falling back to the CPU as allowed", active)
    return session, active


def serving_files(model_path: Path) -> dict[str, Path]:
    """The two serving graphs logged beside a registered model (``extra_files/``) or next to a file."""
    for folder in (model_path.parent / "extra_files", model_path.parent):
        paths = {k: folder / v for k, v in SERVING_PARTS.items()}
        if all(p.is_file() for p in paths.values()):
            return paths
    raise PredictorError(f"{model_path}: the serving graphs {sorted(SERVING_PARTS.values())} are not beside the model "
                         "(models registered by etfuse train carry them in extra_files/)")


@dataclass(frozen=True)
class DayFields:
    """One product day's fields [mm]: ET and, for models with an interval, its calibrated bounds."""

    et: np.ndarray
    et_q05: np.ndarray | None = None
    et_q95: np.ndarray | None = None

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        return None if self.et_q05 is None else (self.et_q05, self.et_q95)


class DayEmbeddings:
    """Spatial embeddings ``(cells, hidden)`` of recent days for one model version.

    A product day needs the embeddings of its whole window; consecutive days share all but one, so
    each day's spatial pass runs once however many product days use it.
    """

    def __init__(self, model: LoadedModel, keep: int) -> None:
        self.model, self.keep = model, max(keep, model.window_days)
        self.days: dict = {}

    def __contains__(self, day) -> bool:
        return day in self.days

    def add(self, day, z) -> None:
        self.days[day] = z
        while len(self.days) > self.keep:
            self.days.pop(min(self.days))


class Predictor:
    """Runs the current champion (or a fixed model file) over the target grid."""

    #: values (cells x hidden width) per temporal call: the GRU's intermediates of one call, (window,
    #: cells, 3 x hidden) floats, stay near the core's 2 MiB L2 cache.  2048 cells of hidden 16 took
    #: 1.09 s per full-province day against 1.41 s for 16384 cells (one thread, identical output;
    #: bench/results.md, day_profile 2026-12-06); most of the graph is copies and element-wise ops
    #: that stream their operands, so it is bound by memory, not arithmetic.
    TEMPORAL_CHUNK_VALUES = 2048 * 16

    def __init__(self, settings: Settings, *, registry=None, model_path: Path | None = None,
                 model_version: int | None = None) -> None:
        if registry is None and model_path is None:
            raise ValueError("Predictor needs a registry (to follow the champion alias) or a model_path")
        self.settings = settings
        self.registry = registry
        self.model_path = Path(model_path) if model_path else None
        self.model_version = model_version
        self._cache: dict[int, LoadedModel] = {}
        self._lock = threading.Lock()

    def model(self) -> LoadedModel:
        """The model to use now: the champion's current version (sessions cached per version)."""
        if self.model_path is not None:
            path, version = self.model_path, (self.model_version or 0)
        else:
            from training.registry import RegistryUnavailableError
            try:
                path, version = self.registry.onnx_model_path("champion")
            except RegistryUnavailableError as exc:
                raise PredictorError(f"no model to serve: the registry is unreachable and no model was loaded "
                                     f"before: {exc}") from exc
            except EtfuseError as exc:
                raise NoModelError(f"no model to serve: {exc}; train and promote one (`etfuse train`)") from exc
        with self._lock:
            if version not in self._cache:
                self._cache[version] = self._load(Path(path), version)
            return self._cache[version]

    def _load(self, path: Path, version: int) -> LoadedModel:
        import onnx
        serving = self.settings.serving
        files = serving_files(path)
        opts = dict(device=serving.device, allow_cpu_fallback=serving.allow_cpu_fallback, threads=serving.threads)
        spatial, active = _session(files["spatial"], **opts)
        temporal, _ = _session(files["temporal"], **opts)
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        try:
            outputs = tuple(o.name for o in temporal.get_outputs())
            interval = None
            if set(BOUND_NAMES) <= set(outputs) and "interval_calibration" in meta:
                interval = IntervalCalibration.from_json(meta["interval_calibration"], source=f"{path} metadata")
            loaded = LoadedModel(version, path, spatial, temporal, active, int(meta["window_days"]),
                                 json.loads(meta["features"]), int(meta["receptive_field"]),
                                 int(spatial.get_outputs()[0].shape[1]),
                                 outputs=outputs if interval is not None else ("et",), interval=interval)
        except (KeyError, TypeError, ValueError, IntervalError) as exc:
            raise PredictorError(f"{path}: the ONNX model lacks the metadata {exc} that etfuse writes at export") from exc
        log.info("serving model version %s from %s on %s", version, path, active)
        return loaded

    # ------------------------------------------------------------------ the two stages
    def embed(self, model: LoadedModel, x_day: np.ndarray) -> np.ndarray:
        """One day's raw features ``(H, W, F)`` -> spatial embeddings ``(H*W, hidden)``, tile by tile."""
        h, w, f = x_day.shape
        if f != len(model.features):
            raise PredictorError(f"model v{model.version} expects {len(model.features)} features "
                                 f"({model.features}); got {f}")
        # cells-major from the start: each tile is transposed once on its way in and out, instead of
        # the whole grid before and after (two passes over 47 + 75 MB per full-province day)
        z = np.empty((h, w, model.hidden), dtype=np.float32)
        for tile in tiles((h, w), self.settings.serving.tile_size, model.receptive_field):
            block = np.ascontiguousarray(x_day[tile.outer[0], tile.outer[1]].transpose(2, 0, 1))[None]
            mask = np.ones(block.shape[2:4], dtype=np.float32)[None]
            out = model.spatial.run(["z"], {"x": block, "mask": mask})[0][0]
            z[tile.core[0], tile.core[1]] = out[:, tile.inner[0], tile.inner[1]].transpose(1, 2, 0)
        return z.reshape(h * w, model.hidden)

    def readout(self, model: LoadedModel, window: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
        """ET [mm] of the window's last day from its days' embeddings -> ``(H, W)``."""
        return self.readout_day(model, window, shape).et

    def readout_day(self, model: LoadedModel, window: list[np.ndarray], shape: tuple[int, int],
                    day=None) -> "DayFields":
        """ET [mm] of the window's last day ``day`` -> ``(H, W)``, with its calibrated 90 % interval
        when the model has one (the season's factor of ``day``; without ``day``, the all-season one).

        Cells whose output is not finite or is negative are an error: a model that returns them is
        refused here as at the gate, and the day is not written.
        """
        if len(window) != model.window_days:
            raise PredictorError(f"model v{model.version} needs {model.window_days} days of embeddings, got {len(window)}")
        n = window[0].shape[0]
        names = list(model.outputs)
        out = np.empty((len(names), n), dtype=np.float32)
        chunk = min(n, max(256, self.TEMPORAL_CHUNK_VALUES // model.hidden))
        buf = np.empty((len(window), chunk, model.hidden), dtype=np.float32)
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            for k, z in enumerate(window):
                buf[k, :e - s] = z[s:e]
            for j, values in enumerate(model.temporal.run(names, {"z": buf[:, :e - s]})):
                out[j, s:e] = values
        bad = ~np.isfinite(out) | (out < 0)
        if bad.any():
            raise PredictorError(f"model v{model.version} returned {int(bad.sum())} non-finite or negative values; "
                                 "the day is not written")
        et = out[0].reshape(shape)
        if model.interval is None:
            return DayFields(et)
        f_lo, f_hi = model.interval.overall if day is None else model.interval.factor(day)
        lower, upper = apply_interval(et, out[1].reshape(shape), out[2].reshape(shape), f_lo, f_hi)
        return DayFields(et, lower, upper)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """ET [mm] of the last day of ``x (T, H, W, F)`` (raw features, NaN = missing) -> ``(H, W)``."""
        model = self.model()
        if x.shape[0] != model.window_days:
            raise PredictorError(f"model v{model.version} expects {model.window_days} days; got {x.shape[0]}")
        return self.readout(model, [self.embed(model, x[t]) for t in range(x.shape[0])], x.shape[1:3])
