"""The GCN-GRU: graph convolution (torch_geometric) on each day, a GRU over the window.

Two forms share one set of weights:

* ``GcnGru`` is trained on batches of station subgraphs with PyG's ``GCNConv`` (8-neighbour
  graph of target cells plus self loops, symmetric normalisation);
* ``GridGcnGru`` (training/export.py) runs the same layers on gridded tiles with a fixed 3x3
  stencil, the form that is exported to ONNX without scatter operations.

Inputs are raw physical features (etfuse.features.FEATURES) with NaN where a source is missing;
the ``InputEncoder`` normalises them with constants fitted on the training split and appends one
availability mask per feature, so the exported graph carries its own normalisation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch_geometric.nn import GCNConv

from etfuse.interval import BOUND_NAMES

#: the model's outputs per node, in order [kg m-2 = mm per day]
OUTPUTS = ("et",) + BOUND_NAMES


class InputEncoder(nn.Module):
    """``(..., F)`` raw features with NaN -> ``(..., 2F)``: normalised values (0 where missing) and masks.

    ``use`` (1 per feature, 0 for a feature the model must not see, e.g. raw position): an unused
    feature and its mask are always 0, so the input layout stays the same for every model.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray, use: np.ndarray | None = None) -> None:
        super().__init__()
        std = np.where(np.asarray(std) > 1e-6, std, 1.0)
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, dtype=np.float32)))
        used = np.ones(len(self.mean), np.float32) if use is None else np.asarray(use, dtype=np.float32)
        self.register_buffer("use", torch.as_tensor(used))

    @property
    def n_features(self) -> int:
        return int(self.mean.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        missing = torch.isnan(x)
        z = torch.where(missing, torch.zeros_like(x), (x - self.mean) / self.std) * self.use
        return torch.cat([z, (~missing).to(x.dtype) * self.use], dim=-1)


class GcnGru(nn.Module):
    """Graph convolution per day, then a GRU over the days; non-negative daily ET [mm] out."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, *, hidden: int = 16, gcn_layers: int = 2,
                 use: np.ndarray | None = None) -> None:
        super().__init__()
        self.encoder = InputEncoder(mean, std, use)
        widths = [2 * self.encoder.n_features] + [hidden] * gcn_layers
        self.convs = nn.ModuleList(GCNConv(a, b, add_self_loops=True, normalize=True)
                                   for a, b in zip(widths[:-1], widths[1:]))
        self.gru = nn.GRU(hidden, hidden)
        # three outputs per node: ET, and the raw 5 % and 95 % quantiles (etfuse/interval.py)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, len(OUTPUTS)))
        self.hidden = hidden

    @property
    def receptive_field(self) -> int:
        """Cells whose inputs reach a node's output: one per layer, plus one for the degrees."""
        return len(self.convs) + 1

    def spatial(self, z: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            z = torch.relu(conv(z, edge_index))
        return z

    def outputs(self, h: torch.Tensor) -> torch.Tensor:
        """Last hidden state ``(N, hidden)`` -> ``(N, 3)``: ET, raw q05, raw q95 [mm day-1].

        ET is softplus-positive; the quantiles are ET minus / plus softplus half-widths, so
        ``0 <= q05 <= et <= q95`` by construction.  In training the half-widths hang on a detached
        ET: the pinball loss shapes the widths and the shared layers, never the point estimate.
        """
        o = self.head(h)
        et = nn.functional.softplus(o[..., 0])
        base = et.detach() if self.training else et
        q05 = torch.relu(base - nn.functional.softplus(o[..., 1]))
        q95 = base + nn.functional.softplus(o[..., 2])
        return torch.stack([et, q05, q95], dim=-1)

    def readout_all(self, sequence: torch.Tensor) -> torch.Tensor:
        """``(T, N, hidden)`` -> ``(N, 3)`` outputs of the window's last day (see ``outputs``)."""
        out, _ = self.gru(sequence)
        return self.outputs(out[-1])

    def readout(self, sequence: torch.Tensor) -> torch.Tensor:
        """``(T, N, hidden)`` -> ET of the last day ``(N,)`` [mm day-1], softplus-positive."""
        return self.readout_all(sequence)[..., 0]

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, nodes: torch.Tensor | None = None, *,
                interval: bool = False) -> torch.Tensor:
        """``x``: ``(T, N, F)`` raw features of N graph nodes over T days; ``edge_index``: ``(2, E)``.

        ``nodes`` (indices) limits the output to those nodes: the GRU runs per node, so the result
        is the same as indexing the full output, without running the GRU on every patch cell
        (training only needs the station nodes; about 50 times less GRU work on 7 x 7 patches).
        """
        days = torch.stack([self.spatial(self.encoder(x[t]), edge_index) for t in range(x.shape[0])])
        out = self.readout_all(days if nodes is None else days[:, nodes])
        return out if interval else out[..., 0]

    def forward_patches(self, x: torch.Tensor, adjacency: torch.Tensor, centre: int, *,
                        interval: bool = False) -> torch.Tensor:
        """The same layers on a batch of equal-sized patches, with a dense normalised adjacency.

        ``x``: ``(T, B, P, F)`` raw features; ``adjacency``: ``(B, P, P)`` from ``gcn_adjacency``;
        returns ET at node ``centre`` of each patch ``(B,)`` (``interval``: all three outputs
        ``(B, 3)``).  Each ``GCNConv`` is applied as
        ``A_hat @ (z W) + b``, which is what its sparse propagation computes (tested to 1e-5), but
        as one batched matrix product for all days and patches instead of 2 scatters and a degree
        normalisation per day and layer: training on 7 x 7 patches is several times faster.
        """
        z = self.encoder(x)
        for conv in self.convs:
            z = torch.relu(torch.matmul(adjacency, conv.lin(z)) + conv.bias)
        out = self.readout_all(z[:, :, centre])
        return out if interval else out[..., 0]


def feature_use(features: tuple[str, ...], *, position: bool) -> np.ndarray:
    """1 per feature the model sees; raw ``lat``/``lon`` only with ``position``."""
    return np.array([0.0 if (name in ("lat", "lon") and not position) else 1.0 for name in features], np.float32)


def gcn_adjacency(height: int, width: int, valid: np.ndarray | None = None) -> np.ndarray:
    """``D^-1/2 (A + I) D^-1/2`` of the 8-neighbour graph of ``king_edges`` (self loops on every
    node, as ``GCNConv(add_self_loops=True, normalize=True)`` adds them): ``(H*W, H*W)`` float32."""
    n = height * width
    src, dst = king_edges(height, width, valid)
    a = np.eye(n, dtype=np.float64)
    a[dst, src] = 1.0
    d = a.sum(axis=1) ** -0.5
    return (d[:, None] * a * d[None, :]).astype(np.float32)


def king_edges(height: int, width: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Directed edges between 8-neighbours of a ``height x width`` block (row-major node ids).

    Cells where ``valid`` is False have no edges, so they influence nothing (as masked cells in
    the grid form).
    """
    ids = np.arange(height * width).reshape(height, width)
    ok = np.ones((height, width), dtype=bool) if valid is None else np.asarray(valid, dtype=bool).reshape(height, width)
    src, dst = [], []
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == 0 and dc == 0:
                continue
            r0, r1 = max(0, -dr), height - max(0, dr)
            c0, c1 = max(0, -dc), width - max(0, dc)
            a = ids[r0:r1, c0:c1]
            b = ids[r0 + dr:r1 + dr, c0 + dc:c1 + dc]
            keep = ok[r0:r1, c0:c1] & ok[r0 + dr:r1 + dr, c0 + dc:c1 + dc]
            src.append(a[keep])
            dst.append(b[keep])
    return np.stack([np.concatenate(src), np.concatenate(dst)]).astype(np.int64)
