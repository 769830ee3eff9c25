"""Training loop: station subgraph batches, random source dropout, early stopping, determinism."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch

from etfuse.features import FEATURES
from etfuse.interval import QUANTILES
from etfuse.settings import Settings
from training.model import GcnGru, feature_use, gcn_adjacency, king_edges
from training.samples import SampleSet, Split

log = logging.getLogger(__name__)

_F = {name: k for k, name in enumerate(FEATURES)}


def pick_device(preference: str) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("training.device is 'cuda' but no CUDA device is usable here")
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


class PatchBatcher:
    """Turns (station, day) keys into PyG batches: ``x (T, B*P, F)``, ``edge_index``, targets."""

    def __init__(self, samples: SampleSet, device: torch.device) -> None:
        self.samples = samples
        self.device = device
        size = samples.patch_size
        self.cells = size * size
        self.edges = [king_edges(size, size, valid) for valid in samples.patch_valid]
        # one dense adjacency per distinct patch shape (inside stations share the full one), so a
        # wide patch_radius costs (P x P) floats per shape, not per station
        shapes, self._shape_of = np.unique(np.asarray(samples.patch_valid, bool), axis=0, return_inverse=True)
        self._shape_of = torch.as_tensor(self._shape_of.reshape(-1).astype(np.int64), device=device)
        self.adjacency = torch.as_tensor(np.stack([gcn_adjacency(size, size, valid) for valid in shapes]),
                                         device=device)

    def window(self, s: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        t = self.samples.window_days
        days = d[:, None] - np.arange(t - 1, -1, -1)[None, :]                         # (B, T)
        skt = self.samples.lst_skt[s[:, None], days]
        default = self.samples.lst_skt_default
        return (self.samples.features[s[:, None], days], self.samples.lst_modis[s[:, None], days], skt,
                skt if default is None else default[s[:, None], days])

    @staticmethod
    def drop_sources(x: np.ndarray, lst_modis: np.ndarray, lst_skt: np.ndarray, drop: dict[str, np.ndarray],
                     lst_skt_default: np.ndarray | None = None) -> np.ndarray:
        """Make a sample look as if a source had not arrived, as operations would see it.

        ``x (B, T, P, F)``; ``drop[source]`` is a boolean per sample ``(B,)`` (the whole window) or
        per sample and day ``(B, T)``.  Without MODIS the LST falls back to ERA5-Land skt (flagged)
        plus the default offset (``lst_skt_default``: with no MODIS file that day there is nothing
        to measure the offset on, as before 2000); without ERA5-Land that fallback is gone too.
        """
        x = x.copy()
        b, t = x.shape[:2]
        mask = lambda k: np.broadcast_to(np.asarray(drop.get(k, np.zeros(b, bool)), bool).reshape(b, -1), (b, t))  # noqa: E731
        g, m, e = mask("gleam"), mask("modis"), mask("era5land")
        nan = np.float32(np.nan)
        for feature, gone in (("gleam_et", g), ("era5land_et", e), ("net_radiation", e)):
            x[..., _F[feature]] = np.where(gone[:, :, None], nan, x[..., _F[feature]])
        default = lst_skt if lst_skt_default is None else lst_skt_default
        skt = np.where(e[:, :, None], nan, np.where(m[:, :, None], default, lst_skt))
        modis = np.where(m[:, :, None], nan, lst_modis)
        lst = np.where(np.isfinite(modis), modis, skt)
        flag = np.where(np.isfinite(modis), 0.0, np.where(np.isfinite(skt), 1.0, np.nan))
        changed = (g | m | e)[:, :, None]
        x[..., _F["lst"]] = np.where(changed, lst, x[..., _F["lst"]])
        x[..., _F["lst_from_skt"]] = np.where(changed, flag, x[..., _F["lst_from_skt"]])
        return x

    @staticmethod
    def draw_dropout(rng: np.random.Generator, n: int, days: int, dropout: dict[str, float]) -> dict[str, np.ndarray]:
        """Random ``(n, days)`` source masks: with probability p a source misses the whole window
        (it has not arrived), and with probability p, independently, a random half of its days
        (a source present on some days of a window and missing on others, as at a gap or an
        archive's edge)."""
        drop = {}
        for src, p in dropout.items():
            if p <= 0:
                continue
            whole = rng.random(n) < p
            some = (rng.random(n) < p)[:, None] & (rng.random((n, days)) < 0.5)
            drop[src] = whole[:, None] | some
        return drop

    def _window_with_dropout(self, keys: pd.DataFrame, rng: np.random.Generator | None,
                             dropout: dict[str, float] | None, drop: dict[str, np.ndarray] | None):
        s = keys["s"].to_numpy()
        d = keys["d"].to_numpy()
        x, lst_modis, lst_skt, lst_skt_default = self.window(s, d)
        if rng is not None and dropout:
            drop = self.draw_dropout(rng, len(s), x.shape[1], dropout)
        if drop:
            x = self.drop_sources(x, lst_modis, lst_skt, drop, lst_skt_default)
        return s, d, x

    def dense_batch(self, keys: pd.DataFrame, *, rng: np.random.Generator | None = None,
                    dropout: dict[str, float] | None = None, drop: dict[str, np.ndarray] | None = None):
        """``x (T, B, P, F)``, the patches' adjacency ``(B, P, P)`` and targets, for
        ``GcnGru.forward_patches`` (the form training and prediction use)."""
        s, d, x = self._window_with_dropout(keys, rng, dropout, drop)
        x_t = torch.as_tensor(np.ascontiguousarray(x.transpose(1, 0, 2, 3)), device=self.device)
        y = torch.as_tensor(self.samples.targets[s, d], device=self.device)
        shape = self._shape_of[torch.as_tensor(np.array(s, dtype=np.int64), device=self.device)]
        return x_t, self.adjacency[shape], y

    def batch(self, keys: pd.DataFrame, *, rng: np.random.Generator | None = None,
              dropout: dict[str, float] | None = None, drop: dict[str, np.ndarray] | None = None):
        """The PyG form (one graph of ``B*P`` nodes with ``edge_index``) of ``dense_batch``: the
        example logged with the torch model, and the reference the dense form is tested against."""
        s, d, x = self._window_with_dropout(keys, rng, dropout, drop)
        b, t, p, f = x.shape
        edge_index = np.concatenate([self.edges[si] + k * p for k, si in enumerate(s)], axis=1)
        x_t = torch.as_tensor(np.ascontiguousarray(x.transpose(1, 0, 2, 3).reshape(t, b * p, f)), device=self.device)
        y = torch.as_tensor(self.samples.targets[s, d], device=self.device)
        centre = torch.arange(b, device=self.device) * p + self.samples.centre
        return x_t, torch.as_tensor(edge_index, device=self.device), y, centre


@dataclass
class FitResult:
    model: GcnGru
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def fit(samples: SampleSet, split: Split, norm: dict, settings: Settings,
        progress: Callable[[int, int, float, float], None] | None = None) -> FitResult:
    """Train a GCN-GRU on ``split.train`` with early stopping on ``split.validation``.

    ``training.threads`` sets torch's CPU threads for the fit only (restored afterwards: the
    setting is process-wide and the caller may serve or export next)."""
    previous = torch.get_num_threads()
    if settings.training.threads:
        torch.set_num_threads(settings.training.threads)
    try:
        return _fit(samples, split, norm, settings, progress)
    finally:
        torch.set_num_threads(previous)


def _fit(samples: SampleSet, split: Split, norm: dict, settings: Settings,
         progress: Callable[[int, int, float, float], None] | None) -> FitResult:
    cfg = settings.training
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    rng = np.random.default_rng(cfg.seed)
    model = GcnGru(np.array(norm["mean"]), np.array(norm["std"]), hidden=cfg.hidden, gcn_layers=cfg.gcn_layers,
                   use=feature_use(FEATURES, position=cfg.position_features)).to(device)
    if samples.patch_size // 2 < model.receptive_field:
        raise ValueError(f"training.patch_radius {samples.patch_size // 2} is smaller than the model's receptive "
                         f"field {model.receptive_field}; station outputs would depend on the patch border")
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    batcher = PatchBatcher(samples, device)
    dropout = {"gleam": cfg.dropout_gleam, "modis": cfg.dropout_modis, "era5land": cfg.dropout_era5land}
    best, best_state, best_epoch, stale = np.inf, None, 0, 0
    history = []
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = rng.permutation(len(split.train))
        losses = []
        for start in range(0, len(order), cfg.batch_size):
            keys = split.train.iloc[order[start:start + cfg.batch_size]]
            x, adjacency, y = batcher.dense_batch(keys, rng=rng, dropout=dropout)
            optimiser.zero_grad()
            loss = training_loss(model.forward_patches(x, adjacency, samples.centre, interval=True), y)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        val_rmse = float(np.sqrt(np.mean((predict(model, batcher, split.validation) - samples.targets[
            split.validation["s"], split.validation["d"]]) ** 2)))
        history.append({"epoch": epoch, "train_mse": float(np.mean(losses)), "validation_rmse": val_rmse})
        if progress:
            progress(epoch, cfg.epochs, float(np.mean(losses)), val_rmse)
        if val_rmse < best - 1e-4:
            best, best_state, best_epoch, stale = val_rmse, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return FitResult(model.eval().cpu(), history, best_epoch, time.perf_counter() - t0)


def pinball(pred: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    """The quantile (pinball) loss of level ``q``: its minimiser is the q-quantile of ``y``."""
    diff = y - pred
    return torch.mean(torch.maximum(q * diff, (q - 1) * diff))


def training_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared error of ET plus the pinball losses of the raw 5 % and 95 % quantiles (``out (B, 3)``)."""
    lo, hi = QUANTILES
    return (torch.nn.functional.mse_loss(out[:, 0], y) + pinball(out[:, 1], y, lo) + pinball(out[:, 2], y, hi))


def predict(model: GcnGru, batcher: PatchBatcher, keys: pd.DataFrame, *, drop_source: str | None = None,
            batch_size: int = 512, interval: bool = False) -> np.ndarray:
    """Fused ET [mm] at the station node of each key, ``(n,)`` (``interval``: ``(n, 3)`` with the
    raw 5 % and 95 % quantiles); ``drop_source`` removes a source everywhere."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(keys), batch_size):
            part = keys.iloc[start:start + batch_size]
            drop = {drop_source: np.ones(len(part), bool)} if drop_source else None
            x, adjacency, _ = batcher.dense_batch(part, drop=drop)
            out.append(model.forward_patches(x, adjacency, batcher.samples.centre, interval=interval).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 3) if interval else 0, np.float32)
