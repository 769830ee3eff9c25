"""Backfill throughput with 1 and 2 Dask workers on the same days.

Builds (or reuses, --home) a synthetic world harmonised into a store, registers a model and
promotes it, then runs `backfill` over the same days with 1 worker and with 2 workers (the product
folder emptied before each run), each worker with one onnxruntime thread, so the ratio measures
how the work spreads over the machine's cores.  Appends a dated section to bench/results.md.

    python bench/backfill.py --region qinghai --start 2021-07-01 --end 2021-08-31 --runs 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

def prepare(home: Path, region: str, start: str, end: str) -> Path:
    """World, store and a promoted model under ``home``; returns the config path."""
    from etfuse.harmonise import harmonise_into_store
    from etfuse.settings import load_settings
    from etfuse.store import HarmonisedStore
    from etfuse.synth.world import WorldSpec, generate
    config = home / "etfuse.yaml"
    world = home / "world"
    if not config.exists():
        home.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps({"home": str(home), "region": region,
                                      "static": {"elevation_file": str(world / "static" / "elevation.nc")},
                                      "training": {"epochs": 2},
                                      "serving": {"quicklooks": False}}))
        settings = load_settings(config)
        t = time.perf_counter()
        generate(world, WorldSpec(bbox=settings.region.bbox, start=start, end=end, seed=3,
                                  resolution_deg=settings.region.resolution_deg, margin_deg=settings.region.margin_deg))
        store = HarmonisedStore.of(settings)
        for source in ("era5land", "gleam", "modis", "cma", "stations"):
            for path in sorted((world / "landing" / source).glob("*")):
                harmonise_into_store(source, path, store, settings=settings)
        print(f"world and store ready in {time.perf_counter() - t:.0f} s", flush=True)
    settings = load_settings(config)
    from training.registry import ModelRegistry
    registry = ModelRegistry(settings)
    if registry.champion() is None:
        from training.pipeline import run_training
        outcome = run_training(settings, registry=registry, actor="bench", echo=lambda m: None)
        if not outcome.decision.promoted:
            registry.promote(outcome.version, actor="bench", reason="benchmark model")
    return config


def run(config: Path, workers: int, chunk_days: int, start=None, end=None) -> tuple[float, int]:
    """One backfill of [start, end] (None: every day of the store) on an emptied product."""
    from etfuse.settings import load_settings
    from flows.backfill import run_backfill
    settings = load_settings(config)
    shutil.rmtree(settings.folder("product"), ignore_errors=True)
    t = time.perf_counter()
    result = run_backfill(config=str(config), home=None, start=start, end=end, workers=workers, chunk_days=chunk_days)
    return time.perf_counter() - t, result["days"]


def main() -> None:
    from bench.report import machine_facts, publish
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path("/tmp/etfuse-bench-backfill"))
    parser.add_argument("--region", default="qinghai")
    parser.add_argument("--start", default="2021-07-01")
    parser.add_argument("--end", default="2021-08-31")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--chunk-days", type=int, default=15)
    parser.add_argument("--range", default=None,
                        help="START,END: backfill only these days of a longer prepared store (default: all)")
    parser.add_argument("--workers", default="1,2", help="worker counts to time, e.g. 2")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    for key, value in {"ORT_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                       "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}.items():
        os.environ.setdefault(key, value)
    config = prepare(args.home, args.region, args.start, args.end)
    counts = [int(w) for w in args.workers.split(",")]
    start, end = (date.fromisoformat(x) for x in args.range.split(",")) if args.range else (None, None)
    times: dict[int, list[float]] = {w: [] for w in counts}
    loads: list[float] = []
    days = 0
    for _ in range(args.runs):
        for workers in counts:
            loads.append(os.getloadavg()[0])
            seconds, days = run(config, workers, args.chunk_days, start, end)
            times[workers].append(seconds)
            print(f"{workers} worker(s): {days} days in {seconds:.1f} s (load average {loads[-1]:.1f} before)",
                  flush=True)
    medians = {w: statistics.median(times[w]) for w in counts}
    ranged = f" --range {args.range}" if args.range else ""
    text = [f"\n## backfill: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n",
            f"`bench/backfill.py --region {args.region} --start {args.start} --end {args.end}{ranged} --runs {args.runs} "
            f"--chunk-days {args.chunk_days} --workers {args.workers}`: "
            f"{days} product days recomputed by the backfill flow on a local Dask cluster (chunks of at most {args.chunk_days} days balanced over the workers, one "
            "onnxruntime thread per worker, quicklooks off), product emptied before each run; wall time of the "
            "whole flow including cluster start-up and the yearly file.\n",
            "| workers | runs | median [s] | days/min |", "|---|---|---|---|"]
    text += [f"| {w} | {args.runs} | {medians[w]:.1f} | {days / medians[w] * 60:.1f} |" for w in counts]
    ratio = f"Speed-up 2 vs 1 worker: {medians[1] / medians[2]:.2f}x. " if {1, 2} <= set(counts) else ""
    text.append(f"\n{ratio}Load average (1 min) before each run: {', '.join(f'{v:.1f}' for v in loads)}. "
                f"Machine: {machine_facts('dask', 'onnxruntime')}.\n")
    publish(text, append=not args.no_append)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
