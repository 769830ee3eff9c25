"""Stand-ins shared by tests: a small exported GCN-GRU and registries that answer or are down."""

from __future__ import annotations

from pathlib import Path

import numpy as np


#: the interval calibration the small model carries (per-season factors of the raw half-widths)
SMALL_MODEL_INTERVAL = '{"factors": {"DJF": 1.5, "JJA": 2.0, "MAM": 1.2, "SON": 1.0}, "level": 0.9, "overall": 1.4}'


def export_small_model(folder: Path, window_days: int = 7, *, interval: bool = True) -> Path:
    """A small GCN-GRU (hidden 8, seeded) with plausible feature statistics, exported as the whole
    model plus the two serving graphs into ``folder``; returns model.onnx.  ``interval``: the
    model carries ``SMALL_MODEL_INTERVAL`` (without it, serving treats it as a model of before the
    interval: no bounds)."""
    import torch

    from etfuse.features import FEATURES
    from training.export import export_onnx, export_serving_parts
    from training.model import GcnGru
    torch.manual_seed(1)
    n = len(FEATURES)
    mean = np.array([2.0, 2.0, 8.0, 285.0, 0.3, 3000.0, 36.5, 101.5, 0.0, 0.0])
    std = np.array([1.5, 1.5, 4.0, 10.0, 0.5, 400.0, 0.5, 0.5, 0.7, 0.7])
    model = GcnGru(mean, std, hidden=8).eval()
    rng = np.random.default_rng(0)
    tile = (rng.normal(size=(window_days, 9, 9, n)).astype(np.float32), np.ones((9, 9), np.float32))
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(model, folder / "model.onnx", window_days=window_days, features=FEATURES, parity_tiles=[tile],
                metadata={"interval_calibration": SMALL_MODEL_INTERVAL} if interval else None)
    export_serving_parts(model, folder, window_days=window_days, n_features=n, parity_tiles=[tile])
    return folder / "model.onnx"


class FakeRegistry:
    """A registry whose champion is version 3 (one metric NaN, as MLflow can store)."""

    class Info:
        version, status, metrics = 3, "champion", {"heldout_fused_rmse": 0.43, "n": float("nan")}

    def champion(self):
        return self.Info()

    def onnx_model_path(self, alias="champion"):
        return "/nowhere/model.onnx", 3


class DownRegistry:
    """A registry that cannot be reached."""

    def champion(self):
        raise ConnectionError("registry unreachable")

    def onnx_model_path(self, alias="champion"):
        raise ConnectionError("registry unreachable")
