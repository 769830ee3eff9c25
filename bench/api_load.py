"""Load benchmark: the HTTP API under concurrent users, on loopback, bounded in count and time.

Builds a full-province product (850 x 1390 cells at 0.01 deg, ``--days`` days, the synthetic
world's ET as in bench/product_io.py, yearly file built), starts the real API with uvicorn
(``--workers`` processes, ``serving.api:app_from_environment``) on 127.0.0.1, then runs
``--clients`` concurrent clients for ``--seconds`` s, each sending one request after the other,
drawn with fixed weights from four kinds:

* ``point``: ``/timeseries`` of a random cell over every product day (JSON);
* ``area``: ``/area`` statistics of a random 1 x 1 degree box on a random day;
* ``map``: ``/overlay/<day>.png``, the explorer's map of a random day (the first request of a day
  renders it, later ones come from the cache);
* ``tile``: ``/subset.nc`` of a random 0.5 x 0.5 degree tile over 7 days (NetCDF download).

Reports p50/p95/p99 latency, 5xx and client errors (timeouts, refused connections) per kind and
appends them to bench/results.md.  Bounded: at most ``--max-requests`` requests and ``--seconds``
s; only 127.0.0.1 is ever contacted.

    .venv/bin/python bench/api_load.py [--days 60] [--clients 50] [--seconds 60] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.product_io import Fields, timed  # noqa: E402
from bench.report import machine_facts, publish  # noqa: E402
from etfuse.settings import load_settings  # noqa: E402
from serving.product import ProductStore  # noqa: E402
from tests.services import free_port, stop_group, wait_http  # noqa: E402

KINDS = {"point": 0.35, "area": 0.30, "map": 0.20, "tile": 0.15}
HOST = "127.0.0.1"
YEAR = 2021


def build_product(home: Path, n_days: int) -> tuple[list[pd.Timestamp], float]:
    settings = load_settings(home=home, region="qinghai", serving={"quicklooks": False},
                             distribution={"stac": False})
    days = pd.date_range(f"{YEAR}-06-01", periods=n_days, freq="D")
    fields = Fields(settings, days, step=8, texture_sd=0.03)
    store = ProductStore(settings)
    start = time.perf_counter()
    for k, day in enumerate(days):
        store.write_day(day, fields(k), model_version=1, status="final" if k < n_days - 5 else "provisional",
                        sources_used={"era5land", "gleam", "modis"},
                        fingerprint=hashlib.sha256(f"{day}".encode()).hexdigest())
    store.build_year(YEAR)
    return list(days), time.perf_counter() - start


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETFUSE_")}
    env.update({"ETFUSE_HOME": str(home), "ETFUSE_REGION__NAME": "qinghai", "ETFUSE_SERVING__QUICKLOOKS": "false",
                "ETFUSE_DISTRIBUTION__RATE_LIMIT_PER_MINUTE": "0", "ETFUSE_DISTRIBUTION__STAC": "false",
                "ETFUSE_DISTRIBUTION__SERVE_WITH_REGISTRY": "false", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    return env


def request_for(kind: str, rng: random.Random, days: list[pd.Timestamp]) -> str:
    lat, lon = rng.uniform(31.5, 39.7), rng.uniform(89.7, 103.2)
    day = rng.choice(days)
    if kind == "point":
        return f"/timeseries?lat={lat:.4f}&lon={lon:.4f}&start={days[0]:%Y-%m-%d}&end={days[-1]:%Y-%m-%d}"
    if kind == "area":
        w, s = rng.uniform(89.5, 102.4), rng.uniform(31.4, 38.8)
        return f"/area?west={w:.3f}&south={s:.3f}&east={w + 1:.3f}&north={s + 1:.3f}&date={day:%Y-%m-%d}"
    if kind == "map":
        return f"/overlay/{day:%Y-%m-%d}.png"
    w, s = rng.uniform(89.5, 102.9), rng.uniform(31.4, 39.3)
    k = rng.randrange(0, max(1, len(days) - 7))
    return (f"/subset.nc?west={w:.3f}&south={s:.3f}&east={w + 0.5:.3f}&north={s + 0.5:.3f}"
            f"&start={days[k]:%Y-%m-%d}&end={days[min(len(days) - 1, k + 6)]:%Y-%m-%d}")


async def run_load(base: str, days: list[pd.Timestamp], clients: int, seconds: float, max_requests: int,
                   timeout_s: float) -> dict[str, dict]:
    import httpx
    assert base.startswith(f"http://{HOST}:"), "the load bench talks to loopback only"
    results = {k: {"latency": [], "status": {}, "errors": []} for k in KINDS}
    deadline = time.perf_counter() + seconds
    sent = 0
    kinds, weights = list(KINDS), list(KINDS.values())

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal sent
        rng = random.Random(1000 + i)
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            kind = rng.choices(kinds, weights)[0]
            url = request_for(kind, rng, days)
            t0 = time.perf_counter()
            try:
                r = await http.get(url)
                await r.aread()
                results[kind]["latency"].append(time.perf_counter() - t0)
                results[kind]["status"][r.status_code] = results[kind]["status"].get(r.status_code, 0) + 1
            except httpx.HTTPError as exc:
                results[kind]["errors"].append(f"{type(exc).__name__}: {exc}")

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=timeout_s, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    return results


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--timeout", type=float, default=30.0, help="per request [s]")
    parser.add_argument("--home", help="reuse a product built by an earlier run (--keep)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the results")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.clients <= 200 or not 0 < args.seconds <= 600:
        parser.error("bounded: 1-200 clients, at most 600 s")

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="etfuse_bench_api_"))
    if args.home:
        settings = load_settings(home=home, region="qinghai")
        days = ProductStore(settings, reconcile=False).days()
        build_s = float("nan")
    else:
        print(f"building a {args.days}-day full-province product in {home}", flush=True)
        days, build_s = build_product(home, args.days)
        print(f"  built in {build_s:.0f} s", flush=True)
    port = free_port()
    log_path = home / "uvicorn.log"
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "serving.api:app_from_environment", "--host", HOST,
           "--port", str(port), "--workers", str(args.workers), "--log-level", "warning", "--no-access-log"]
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, env=environment(home), stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    base = f"http://{HOST}:{port}"
    try:
        wait_http(base + "/ready", timeout=120, proc=server, log=log_path)
        warm_s, _ = timed(lambda: asyncio.run(run_load(base, days, 4, 3.0, 200, args.timeout)))
        print(f"warm-up done ({warm_s:.1f} s); {args.clients} clients for {args.seconds:.0f} s", flush=True)
        t0 = time.perf_counter()
        results = asyncio.run(run_load(base, days, args.clients, args.seconds, args.max_requests, args.timeout))
        wall = time.perf_counter() - t0
    finally:
        stop_group(server)
    server_errors = [line for line in log_path.read_text().splitlines() if "Traceback" in line or "ERROR" in line]

    now = datetime.now(timezone.utc)
    total = sum(len(r["latency"]) + len(r["errors"]) for r in results.values())
    lines = [f"\n## api_load: {now:%Y-%m-%d %H:%M} UTC\n",
             f"`bench/api_load.py --days {len(days)} --clients {args.clients} --seconds {args.seconds:g} "
             f"--workers {args.workers}`: the API (uvicorn, {args.workers} worker processes) on 127.0.0.1 over a "
             f"full-province product (850 x 1390 cells, {len(days)} days, yearly file built); {args.clients} "
             f"concurrent clients for {wall:.0f} s, {total} requests ({total / wall:.0f} per s). point = a cell's "
             f"series over all {len(days)} days, area = 1 x 1 deg box statistics, map = the explorer's overlay PNG "
             f"of a day, tile = NetCDF subset of a 0.5 x 0.5 deg tile over 7 days.  Latency from the client side "
             f"(includes queueing in the server).{(' ' + args.note) if args.note else ''}\n",
             "| kind | requests | p50 [ms] | p95 [ms] | p99 [ms] | max [ms] | 5xx | other non-200 | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, r in results.items():
        lat = [v * 1000 for v in r["latency"]]
        five = sum(n for code, n in r["status"].items() if code >= 500)
        other = sum(n for code, n in r["status"].items() if code != 200 and code < 500)
        lines.append(f"| {kind} | {len(lat) + len(r['errors'])} | {percentile(lat, 50):.0f} | {percentile(lat, 95):.0f} | "
                     f"{percentile(lat, 99):.0f} | {max(lat, default=float('nan')):.0f} | {five} | {other} | "
                     f"{len(r['errors'])} |")
    errors = [e for r in results.values() for e in r["errors"]][:3]
    lines += ["", f"Server log: {len(server_errors)} error lines. " + (f"First client errors: {errors}. " if errors else "")
              + f"Machine: {machine_facts('fastapi', 'uvicorn', 'netCDF4', 'httpx')}.", ""]
    publish(lines, append=not args.no_append)
    if args.keep or args.home:
        print(f"kept {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
