"""Where a product day's time goes: reading, regridding, embedding, readout, writing.

Runs ``run_update`` over a range of days in one process with one onnxruntime thread (what one Dask
worker of a backfill does for its chunk) and times each stage by wrapping the functions that do it:

* reading     ``HarmonisedStore.read_grid_day`` (the harmonised grids of a source and day from disk);
* regridding  the rest of ``grid_day``: store grids onto the 0.01 deg target grid (index maps),
              LST offset, feature assembly;
* embedding   ``Predictor.embed`` (the spatial ONNX graph over the grid, tile by tile);
* readout     ``Predictor.readout_day`` (the temporal ONNX graph over the window's embeddings, and the
              interval's bounds from its raw quantiles);
* writing     ``ProductStore.write_day`` (NetCDF write, fsync, checksum, ledger);
* other       planning, the model's resolution, everything else (wall minus the above).

Uses the store and registry of a home prepared by ``bench/backfill.py`` (``--home``) through a
separate home of symlinks, so the product it writes starts empty and the prepared one is untouched.

    python bench/day_profile.py --home /tmp/etfuse-bench-backfill --start 2021-07-01 --end 2021-07-20
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

STAGES = ("reading", "regridding", "embedding", "readout", "writing", "other")


def profile_home(home: Path) -> Path:
    """A home whose harmonised store, registry, caches and world are the prepared home's (symlinks),
    with an empty product; returns its config path."""
    work = home.parent / f"{home.name}-profile"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    for name in ("harmonised", "mlflow", "cache", "world"):
        if (home / name).exists():
            (work / name).symlink_to(home / name)
    config = json.loads((home / "etfuse.yaml").read_text())
    config["home"] = str(work)
    (work / "etfuse.yaml").write_text(json.dumps(config))
    return work / "etfuse.yaml"


def timed(totals: dict[str, float], cpu: dict[str, float], stage: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t, c = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[stage] += time.perf_counter() - t
            cpu[stage] += time.thread_time() - c
    return wrapper


def profile(config: Path, start: str, end: str, threads: int) -> tuple[dict[str, float], dict[str, float], int, float]:
    """Wall and CPU seconds per stage over the range, days written, wall seconds.

    CPU seconds (of the computing thread; the process's for ``other``) say what a stage costs when
    other work shares the cores, where wall seconds also count the time the process waited for one.
    """
    import serving.update as update
    from etfuse.settings import load_settings
    from etfuse.store import HarmonisedStore
    from serving.predictor import Predictor
    from serving.product import ProductStore
    from training.registry import ModelRegistry
    settings = load_settings(config)
    settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"threads": threads,
                                                                                         "quicklooks": False})})
    totals: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)
    patches = [(HarmonisedStore, "read_grid_day", "reading"), (update, "grid_day", "grid_day"),
               (Predictor, "embed", "embedding"), (Predictor, "readout_day", "readout"),
               (ProductStore, "write_day", "writing")]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, stage in patches:
        setattr(owner, name, timed(totals, cpu, stage, getattr(owner, name)))
    try:
        t, c = time.perf_counter(), time.process_time()
        report = update.run_update(settings, predictor=Predictor(settings, registry=ModelRegistry(settings)),
                                   product=ProductStore(settings), start=start, end=end, build_years=False)
        wall, process_cpu = time.perf_counter() - t, time.process_time() - c
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    out = {"reading": totals["reading"], "regridding": totals["grid_day"] - totals["reading"],
           "embedding": totals["embedding"], "readout": totals["readout"], "writing": totals["writing"]}
    out["other"] = wall - sum(out.values())
    out_cpu = {"reading": cpu["reading"], "regridding": cpu["grid_day"] - cpu["reading"],
               "embedding": cpu["embedding"], "readout": cpu["readout"], "writing": cpu["writing"]}
    out_cpu["other"] = process_cpu - sum(out_cpu.values())
    return out, out_cpu, len(report.written), wall


def main() -> None:
    from bench.report import machine_facts, publish
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path("/tmp/etfuse-bench-backfill"))
    parser.add_argument("--start", default="2021-07-01")
    parser.add_argument("--end", default="2021-07-20")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads (a backfill worker has 1)")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    for key, value in {"ORT_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}.items():
        os.environ.setdefault(key, value)
    config = profile_home(args.home)
    load = os.getloadavg()[0]
    stages, stages_cpu, days, wall = profile(config, args.start, args.end, args.threads)
    shutil.rmtree(config.parent, ignore_errors=True)
    lines = [f"\n## day_profile: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n",
             f"`bench/day_profile.py --start {args.start} --end {args.end} --threads {args.threads}`: {days} product "
             f"days of the full province computed by one process (`run_update`, what one backfill worker does for a "
             f"chunk), each stage timed by wrapping the function that does it; {wall:.1f} s wall, "
             f"{days / wall * 60:.1f} days/min. A chunk's first day computes its whole window (7 days of "
             "reading, regridding and embedding); every later day one new day.\n",
             "| stage | total [s] | per written day [s] | share | CPU per written day [s] |",
             "|---|---|---|---|---|"]
    for stage in STAGES:
        lines.append(f"| {stage} | {stages[stage]:.1f} | {stages[stage] / max(days, 1):.2f} | "
                     f"{stages[stage] / wall * 100:.0f} % | {stages_cpu[stage] / max(days, 1):.2f} |")
    lines.append(f"\nLoad average (1 min) {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (other work "
                 f"shared the 2 cores). Machine: {machine_facts('onnxruntime', 'netCDF4')}.\n")
    publish(lines, append=not args.no_append)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
