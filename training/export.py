"""ONNX export of the GCN-GRU in its gridded form, with proven parity.

On the regular grid the symmetric-normalised 8-neighbour GCN (self loops included) equals a fixed
3x3 depthwise stencil with a land mask (docs/stack.md):

    out = dinv * conv3x3(dinv * (x W)) + b,   deg = conv3x3(mask),   dinv = mask / sqrt(max(deg, 1))

PyG's message passing exports to ScatterElements/ScatterND, which onnxruntime runs slowly on CPU
(and, with more than one thread, computes ScatterND wrongly); the stencil exports to Conv only.
``export_onnx`` refuses to write a model whose graph holds a scatter op or whose outputs differ
from the PyG model by more than the tolerance.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from etfuse.tempfiles import temporary_name
from etfuse.errors import EtfuseError
from training.model import OUTPUTS, GcnGru, king_edges
from training.serving_parts import SERVING_PARTS

log = logging.getLogger(__name__)

FORBIDDEN_OPS = frozenset({"ScatterElements", "ScatterND", "Scatter"})
PARITY_TOLERANCE_MM = 1e-4
INPUT_NAMES = ("x", "mask")
OUTPUT_NAME = "et"


class ExportError(EtfuseError):
    """The exported graph is not acceptable (scatter ops, parity failure)."""


class GridGcnGru(nn.Module):
    """The trained ``GcnGru`` on gridded tiles: ``x (B, T, H, W, F)``, ``mask (B, H, W)`` -> ``et (B, H, W)``.

    ``mask`` is 1 for cells of the region; cells outside (tile padding beyond the region) take no
    part in the convolution, exactly as absent nodes in the PyG graph.
    """

    def __init__(self, model: GcnGru) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mask_kernel", torch.ones(1, 1, 3, 3))
        for i, conv in enumerate(model.convs):
            channels = conv.lin.weight.shape[0]
            self.register_buffer(f"kernel{i}", torch.ones(channels, 1, 3, 3))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, h, w, _ = x.shape
        z = self.model.encoder(x)
        deg = nn.functional.conv2d(mask.unsqueeze(1), self.mask_kernel, padding=1).squeeze(1)
        dinv = (mask / torch.sqrt(torch.clamp(deg, min=1.0))).unsqueeze(1).unsqueeze(-1)      # (B, 1, H, W, 1)
        for i, conv in enumerate(self.model.convs):
            y = conv.lin(z) * dinv                                                              # (B, T, H, W, C)
            c = y.shape[-1]
            y = y.permute(0, 1, 4, 2, 3).reshape(b * t, c, h, w)
            y = nn.functional.conv2d(y, getattr(self, f"kernel{i}"), padding=1, groups=c)
            y = y.reshape(b, t, c, h, w).permute(0, 1, 3, 4, 2)
            z = torch.relu(y * dinv + conv.bias)
        sequence = z.permute(1, 0, 2, 3, 4).reshape(t, b * h * w, z.shape[-1])
        return self.model.readout(sequence).reshape(b, h, w)


class SpatialGrid(nn.Module):
    """Serving part 1, one day: ``x (B, F, H, W)`` raw features, ``mask (B, H, W)`` -> ``z (B, C, H, W)``.

    Channel-first throughout (the linear maps as 1x1 convolutions), so the graph has no transposes;
    its output per day is cached by the server and reused by the next ``window_days - 1`` days.
    """

    def __init__(self, model: GcnGru) -> None:
        super().__init__()
        self.model = model
        enc = model.encoder
        self.register_buffer("mean", enc.mean.reshape(1, -1, 1, 1).clone())
        self.register_buffer("std", enc.std.reshape(1, -1, 1, 1).clone())
        # features the model does not see (InputEncoder.use): value and mask zeroed, as in training
        self.register_buffer("use", enc.use.reshape(1, -1, 1, 1).clone())
        self.register_buffer("mask_kernel", torch.ones(1, 1, 3, 3))
        for i, conv in enumerate(model.convs):
            self.register_buffer(f"weight{i}", conv.lin.weight.detach().clone()[:, :, None, None])
            self.register_buffer(f"bias{i}", conv.bias.detach().clone().reshape(1, -1, 1, 1))
            self.register_buffer(f"kernel{i}", torch.ones(conv.lin.weight.shape[0], 1, 3, 3))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        missing = torch.isnan(x)
        z = torch.where(missing, torch.zeros_like(x), (x - self.mean) / self.std) * self.use
        z = torch.cat([z, (~missing).to(x.dtype) * self.use], dim=1)
        m = mask.unsqueeze(1)
        deg = nn.functional.conv2d(m, self.mask_kernel, padding=1)
        dinv = m / torch.sqrt(torch.clamp(deg, min=1.0))
        for i in range(len(self.model.convs)):
            y = nn.functional.conv2d(z, getattr(self, f"weight{i}")) * dinv
            y = nn.functional.conv2d(y, getattr(self, f"kernel{i}"), padding=1, groups=y.shape[1])
            z = torch.relu(y * dinv + getattr(self, f"bias{i}"))
        return z


class TemporalHead(nn.Module):
    """Serving part 2, per node: ``z (T, N, C)`` -> the last day's ``et``, ``et_q05`` and ``et_q95``
    ``(N,)`` each [mm] (the raw quantiles; serving scales them with the model's calibration).

    The GRU written out step by step (input projections of all days in one matrix product), which
    onnxruntime runs faster on node chunks than its fused GRU operator; equal to ``nn.GRU``.
    """

    def __init__(self, model: GcnGru) -> None:
        super().__init__()
        self.model = model
        self.hidden = model.gru.hidden_size

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        g = self.model.gru
        hd = self.hidden
        gi_all = torch.matmul(z, g.weight_ih_l0.t()) + g.bias_ih_l0
        h = None
        for t in range(z.shape[0]):
            gi = gi_all[t]
            gh = g.bias_hh_l0 if h is None else torch.matmul(h, g.weight_hh_l0.t()) + g.bias_hh_l0
            r = torch.sigmoid(gi[:, :hd] + gh[..., :hd])
            u = torch.sigmoid(gi[:, hd:2 * hd] + gh[..., hd:2 * hd])
            n = torch.tanh(gi[:, 2 * hd:] + r * gh[..., 2 * hd:])
            h = (1 - u) * n if h is None else (1 - u) * n + u * h
        out = self.model.outputs(h)
        return out[:, 0], out[:, 1], out[:, 2]




def _export(module: nn.Module, example: tuple, path: Path, input_names: list[str], outputs: list[str],
            dynamic_shapes: tuple) -> None:
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")          # the exporter's notes on dynamic axis names
        torch.onnx.export(module, example, str(path), dynamo=True, input_names=input_names, output_names=outputs,
                          opset_version=18, external_data=False, verbose=False, dynamic_shapes=dynamic_shapes)


def export_serving_parts(model: GcnGru, folder: Path, *, window_days: int, n_features: int,
                         parity_tiles: list[tuple[np.ndarray, np.ndarray]],
                         tolerance: float = PARITY_TOLERANCE_MM) -> tuple[dict[str, Path], ParityReport]:
    """Export the two serving graphs and prove that spatial-per-day then temporal equals PyG."""
    model = model.eval().cpu()
    folder.mkdir(parents=True, exist_ok=True)
    paths = {k: folder / v for k, v in SERVING_PARTS.items()}
    batch = torch.export.Dim("batch", min=1, max=4096)
    height = torch.export.Dim("height", min=3, max=8192)
    width = torch.export.Dim("width", min=3, max=8192)
    _export(SpatialGrid(model).eval(), (torch.zeros(2, n_features, 8, 8), torch.ones(2, 8, 8)), paths["spatial"],
            ["x", "mask"], ["z"], ({0: batch, 2: height, 3: width}, {0: batch, 1: height, 2: width}))
    nodes = torch.export.Dim("nodes", min=2, max=1 << 28)
    _export(TemporalHead(model).eval(), (torch.zeros(window_days, 16, model.hidden),), paths["temporal"],
            ["z"], list(OUTPUTS), ({1: nodes},))
    bad = (graph_ops(paths["spatial"]) | graph_ops(paths["temporal"])) & FORBIDDEN_OPS
    if bad:
        raise ExportError(f"{folder}: the serving graphs contain {sorted(bad)}; expected no scatter operations")
    spatial, temporal = onnx_session(paths["spatial"]), onnx_session(paths["temporal"])
    worst, compared = 0.0, 0
    for x, mask in parity_tiles:
        expected = pyg_on_tile(model, x, mask, interval=True)
        got = run_parts(spatial, temporal, x, mask, outputs=OUTPUTS)
        valid = mask.astype(bool)
        diff = np.abs(got[valid] - expected[valid])
        worst = max(worst, float(diff.max()) if diff.size else 0.0)
        compared += int(valid.sum())
    if worst > tolerance:
        raise ExportError(f"{folder}: the serving graphs differ from the PyG model by {worst:.3g} mm; "
                          f"expected at most {tolerance:g} mm on {compared} cells")
    return paths, ParityReport(worst, compared, tuple(sorted(graph_ops(paths["spatial"]) | graph_ops(paths["temporal"]))))


def run_parts(spatial, temporal, x: np.ndarray, mask: np.ndarray, *, outputs: tuple[str, ...] = ("et",)) -> np.ndarray:
    """The serving path on one whole tile ``x (T, H, W, F)``: spatial per day, then temporal per
    cell -> ``(H, W)`` ET, or ``(H, W, K)`` for ``outputs`` of more than one name."""
    t, h, w, _ = x.shape
    z = [spatial.run(["z"], {"x": np.ascontiguousarray(x[k].transpose(2, 0, 1))[None],
                             "mask": mask[None].astype(np.float32)})[0][0] for k in range(t)]
    seq = np.stack([zk.reshape(zk.shape[0], h * w).T for zk in z])          # (T, N, C)
    got = temporal.run(list(outputs), {"z": np.ascontiguousarray(seq)})
    return got[0].reshape(h, w) if len(outputs) == 1 else np.stack([g.reshape(h, w) for g in got], axis=-1)


@dataclass(frozen=True)
class ParityReport:
    max_abs_diff_mm: float
    cells_compared: int
    onnx_ops: tuple[str, ...]


def graph_ops(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def pyg_on_tile(model: GcnGru, x: np.ndarray, mask: np.ndarray, *, interval: bool = False) -> np.ndarray:
    """The PyG model on one gridded tile ``x (T, H, W, F)``: ET per cell ``(H, W)`` (NaN off the
    mask); ``interval``: ``(H, W, 3)`` with the raw quantiles."""
    t, h, w, f = x.shape
    valid = mask.astype(bool)
    edges = torch.as_tensor(king_edges(h, w, valid))
    with torch.no_grad():
        out = model(torch.as_tensor(x.reshape(t, h * w, f)), edges, interval=interval).numpy()
    out = out.reshape((h, w, 3) if interval else (h, w))
    return np.where(valid[..., None] if interval else valid, out, np.nan)


def onnx_session(path: Path, threads: int = 1):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_parity(model: GcnGru, path: Path, tiles: list[tuple[np.ndarray, np.ndarray]],
                 tolerance: float = PARITY_TOLERANCE_MM) -> ParityReport:
    """Run PyG and ONNX on the same tiles; raise ``ExportError`` beyond ``tolerance`` [mm]."""
    ops = graph_ops(path)
    bad = ops & FORBIDDEN_OPS
    if bad:
        raise ExportError(f"{path}: the exported graph contains {sorted(bad)}; expected no scatter operations "
                          "(they are slow on CPU and unsupported on CUDA at some opsets)")
    session = onnx_session(path)
    worst, compared = 0.0, 0
    for x, mask in tiles:
        expected = pyg_on_tile(model, x, mask)
        got = session.run([OUTPUT_NAME], {"x": x[None].astype(np.float32), "mask": mask[None].astype(np.float32)})[0][0]
        valid = mask.astype(bool)
        diff = np.abs(got[valid] - expected[valid])
        if not np.isfinite(diff).all():
            raise ExportError(f"{path}: ONNX or PyG output is not finite on a parity tile")
        worst = max(worst, float(diff.max()) if diff.size else 0.0)
        compared += int(valid.sum())
    if worst > tolerance:
        raise ExportError(f"{path}: ONNX output differs from the PyG model by {worst:.3g} mm; "
                          f"expected at most {tolerance:g} mm on {compared} cells; the model is not registered")
    return ParityReport(worst, compared, tuple(sorted(ops)))


def export_onnx(model: GcnGru, path: Path, *, window_days: int, features: tuple[str, ...],
                parity_tiles: list[tuple[np.ndarray, np.ndarray]], metadata: dict | None = None) -> ParityReport:
    """Export the gridded form (dynamic batch, height and width; T fixed) and prove parity.

    The file is written to a temporary name and only renamed to ``path`` once the parity check
    and the scatter check have passed.
    """
    model = model.eval().cpu()
    grid = GridGcnGru(model).eval()
    n_features = len(features)
    # batch 2 in the example: torch.export specialises dimensions of size 1
    example = (torch.zeros(2, window_days, 8, 8, n_features), torch.ones(2, 8, 8))
    tmp = temporary_name(path)
    batch = torch.export.Dim("batch", min=1, max=4096)
    height = torch.export.Dim("height", min=3, max=8192)
    width = torch.export.Dim("width", min=3, max=8192)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")          # the exporter's notes on dynamic axis names
        torch.onnx.export(grid, example, str(tmp), dynamo=True, input_names=list(INPUT_NAMES),
                          output_names=[OUTPUT_NAME], opset_version=18, external_data=False, verbose=False,
                          dynamic_shapes=({0: batch, 2: height, 3: width}, {0: batch, 1: height, 2: width}))
    proto = onnx.load(str(tmp))
    meta = {"features": json.dumps(list(features)), "window_days": str(window_days),
            "receptive_field": str(model.receptive_field), "units": "et: kg m-2 (mm) per day",
            **{k: (v if isinstance(v, str) else json.dumps(v)) for k, v in (metadata or {}).items()}}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(tmp))
    try:
        report = check_parity(model, tmp, parity_tiles)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    log.info("exported %s: parity %.2g mm over %d cells", path, report.max_abs_diff_mm, report.cells_compared)
    return report


def onnx_metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
