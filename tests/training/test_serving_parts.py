"""The serving graphs' file names live in a torch-free module, and serving never imports torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from training.serving_parts import SERVING_PARTS


def test_export_writes_the_names_the_predictor_looks_for():
    from training import export
    assert export.SERVING_PARTS == SERVING_PARTS


def test_loading_a_model_for_serving_imports_no_torch(tmp_path):
    """A backfill worker or the API loads and runs its model with onnxruntime only (torch and
    torch-geometric cost each such process about 3 s of imports)."""
    from training.export import export_onnx, export_serving_parts
    from training.model import GcnGru
    n_features = 10
    torch.manual_seed(1)
    model = GcnGru(np.zeros(n_features), np.ones(n_features), hidden=4, gcn_layers=1).eval()
    tiles = [(np.random.default_rng(0).normal(size=(7, 6, 6, n_features)).astype(np.float32), np.ones((6, 6), np.float32))]
    export_onnx(model, tmp_path / "model.onnx", window_days=7, features=tuple(f"f{i}" for i in range(n_features)),
                parity_tiles=tiles)
    export_serving_parts(model, tmp_path, window_days=7, n_features=n_features, parity_tiles=tiles)
    code = ("import sys\n"
            "import numpy as np\n"
            "from etfuse.settings import Settings\n"
            "from serving.predictor import Predictor\n"
            f"p = Predictor(Settings(), model_path={str(tmp_path / 'model.onnx')!r})\n"
            f"et = p.predict(np.zeros((7, 6, 6, {n_features}), np.float32))\n"
            "assert et.shape == (6, 6), et.shape\n"
            "print(sorted(m for m in ('torch', 'torch_geometric') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
