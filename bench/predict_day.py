"""Full-province day (850 x 1390 cells) through the predictor, against the naive PyTorch eager run.

Each case runs in its own process under /usr/bin/time -v (wall time and peak RSS of that process
alone), several times; medians are reported and appended to bench/results.md with machine facts.

Cases (the default model: hidden 16, 2 GCN layers, 7-day window, 10 features):
  steady   the operational cost of one more day: the spatial pass of the new day (tiled, ONNX) and
           the GRU readout over the 7 cached day embeddings (ONNX, node chunks), with ET's
           calibrated 90 % interval (the three outputs and the season's scaling)
  cold     a day with nothing cached: 7 spatial passes and the readout
  eager    the same model, naive: PyG GCNConv + nn.GRU in PyTorch eager on the whole graph at once
  inputs   assembling one day's features on the full grid from a harmonised store (optional,
           --store HOME of a province store)

Weights do not change the cost; by default the model is the default architecture with random
weights, or pass --model FILE (an exported model.onnx with its serving graphs beside it).

    python bench/predict_day.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROWS, COLS, T, F = 850, 1390, 7, 10
DAY = "2021-07-15"            # the product day (its season picks the interval's scale factor)


def _features(rng):
    import numpy as np
    x = np.empty((ROWS, COLS, F), dtype=np.float32)
    centres = [2.0, 2.0, 8.0, 285.0, 0.3, 3500.0, 35.6, 96.4, 0.5, -0.5]
    spread = [1.5, 1.5, 4.0, 10.0, 0.5, 700.0, 2.5, 4.0, 0.5, 0.5]
    for k in range(F):
        x[..., k] = centres[k] + spread[k] * rng.standard_normal((ROWS, COLS), dtype=np.float32)
    x[: ROWS // 3, :, 3] = np.nan             # clouds over a third: the masks are exercised
    return x


def _model(seed: int = 0):
    import numpy as np
    import torch
    from training.model import GcnGru
    torch.manual_seed(seed)
    return GcnGru(np.zeros(F), np.ones(F), hidden=16, gcn_layers=2).eval()


def _export(folder: Path) -> Path:
    import numpy as np
    from etfuse.features import FEATURES
    from training.export import export_onnx, export_serving_parts
    model = _model()
    rng = np.random.default_rng(0)
    tile = (rng.normal(size=(T, 12, 12, F)).astype(np.float32), np.ones((12, 12), np.float32))
    # a calibration as training writes it, so serving computes the interval bounds too
    calibration = '{"factors": {"DJF": 1.3, "JJA": 1.6, "MAM": 1.4, "SON": 1.4}, "level": 0.9, "overall": 1.45}'
    export_onnx(model, folder / "model.onnx", window_days=T, features=FEATURES, parity_tiles=[tile],
                metadata={"interval_calibration": calibration})
    export_serving_parts(model, folder, window_days=T, n_features=F, parity_tiles=[tile])
    return folder / "model.onnx"


def case(name: str, model_path: str, store: str | None) -> dict:
    """Run one case in this process; prints a JSON line with the timed seconds."""
    import numpy as np
    rng = np.random.default_rng(1)
    if name == "eager":
        import torch
        from training.model import king_edges
        torch.set_num_threads(2)
        x = torch.as_tensor(np.stack([_features(rng) for _ in range(T)]).reshape(T, ROWS * COLS, F))
        edges = torch.as_tensor(king_edges(ROWS, COLS))
        model = _model()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model(x, edges, interval=True)               # ET and both quantiles, as serving
        seconds = time.perf_counter() - t0
        return {"case": name, "seconds": seconds, "mean_et": float(out[:, 0].mean())}
    from etfuse.settings import load_settings
    from serving.predictor import Predictor
    settings = load_settings(region="qinghai")
    predictor = Predictor(settings, model_path=Path(model_path), model_version=1)
    model = predictor.model()
    if name == "inputs":
        import pandas as pd
        from etfuse.features import InputReader, elevation_on_grid, grid_day
        from etfuse.store import HarmonisedStore
        s = load_settings(home=store, region="qinghai")
        reader = InputReader(HarmonisedStore.of(s), s)
        day = reader.store.grid_days("era5land")[-1]
        elevation = elevation_on_grid(s, reader.grid, reader.cache)
        grid_day(reader, day - pd.Timedelta(days=1), elevation)        # warm the index maps
        t0 = time.perf_counter()
        x, present = grid_day(reader, day, elevation)
        return {"case": name, "seconds": time.perf_counter() - t0, "sources": sorted(present)}
    days = [_features(rng) for _ in range(T)]
    if name == "steady":
        cached = [predictor.embed(model, d) for d in days[:-1]]        # earlier days: already computed
        t0 = time.perf_counter()
        z = predictor.embed(model, days[-1])
        out = predictor.readout_day(model, cached + [z], (ROWS, COLS), DAY)
    else:
        t0 = time.perf_counter()
        out = predictor.readout_day(model, [predictor.embed(model, d) for d in days], (ROWS, COLS), DAY)
    if out.bounds is None:
        raise RuntimeError(f"{model_path}: the model has no interval; the bench times ET with its interval")
    return {"case": name, "seconds": time.perf_counter() - t0, "mean_et": float(out.et.mean()),
            "mean_width_mm": float((out.et_q95 - out.et_q05).mean())}


def measure(name: str, model_path: Path, store: str | None) -> dict:
    cmd = ["/usr/bin/time", "-v", sys.executable, __file__, "--case", name, "--model", str(model_path)]
    if store:
        cmd += ["--store", store]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    result["peak_rss_gib"] = int(rss.group(1)) / 1024 ** 2 if rss else float("nan")
    result["process_wall"] = wall
    return result


def main() -> None:
    from bench.report import machine_facts, publish
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--model", help="model.onnx with its serving graphs (default: export the default model)")
    parser.add_argument("--store", help="ETFUSE_HOME of a province harmonised store, for the 'inputs' case")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--eager-runs", type=int, default=1, help="the eager run takes ~20-40 s and ~8 GiB")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.model, args.store)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="etfuse-bench-"))
    model_path = Path(args.model) if args.model else _export(tmp)
    cases = [("steady", args.runs), ("cold", args.runs), ("eager", args.eager_runs)]
    if args.store:
        cases.append(("inputs", args.runs))
    cases = [(name, runs) for name, runs in cases if runs > 0]
    rows = []
    for name, runs in cases:
        results = [measure(name, model_path, args.store) for _ in range(runs)]
        rows.append((name, runs, statistics.median(r["seconds"] for r in results),
                     min(r["seconds"] for r in results), max(r["seconds"] for r in results),
                     statistics.median(r["peak_rss_gib"] for r in results)))
        print(f"{name}: median {rows[-1][2]:.2f} s, peak RSS {rows[-1][5]:.2f} GiB ({runs} runs)", flush=True)
    by = {r[0]: r for r in rows}
    text = [f"\n## predict_day: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n",
            f"`bench/predict_day.py --runs {args.runs}`: one full-province day (850 x 1390 = 1,181,500 cells), "
            "default model (hidden 16, 2 GCN layers, 7-day window), 2 threads. Seconds timed inside the process "
            "around the work (model loading excluded); peak RSS of the whole process from /usr/bin/time.\n",
            "| case | runs | median [s] | min [s] | max [s] | peak RSS [GiB] |", "|---|---|---|---|---|---|"]
    text += [f"| {n} | {k} | {m:.2f} | {lo:.2f} | {hi:.2f} | {rss:.2f} |" for n, k, m, lo, hi, rss in rows]
    speedup = (f"Speed-up over the eager run: steady {by['eager'][2] / by['steady'][2]:.1f}x, "
               f"cold {by['eager'][2] / by['cold'][2]:.1f}x. " if {"eager", "steady", "cold"} <= by.keys() else "")
    text.append(f"\n{speedup}Machine: {machine_facts('onnxruntime', 'torch', 'numpy')}.\n")
    publish(text, append=not args.no_append)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
