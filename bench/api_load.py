"""Load benchmark: the HTTP API under concurrent users, on loopback, bounded in count and time.

Builds a full-province product (850 x 1390 cells at 0.01 deg, ``--days`` days, the synthetic
world's ET as in bench/product_io.py, yearly file built), starts the real API with uvicorn
(``--workers`` processes, ``serving.api:app_from_environment``) on 127.0.0.1, then runs
``--clients`` concurrent clients for ``--seconds`` s, each on its own keep-alive connection, sending
one request after the other (no think time), drawn with fixed weights from four kinds:

* ``point``: ``/timeseries`` of a random cell over every product day (JSON);
* ``area``: ``/area`` statistics of a random 1 x 1 degree box on a random day;
* ``map``: ``/overlay/<day>.png``, the explorer's map of a random day (the first request of a day
  draws it in the render lane, later ones come from memory or disk);
* ``tile``: ``/subset.nc`` of a random 0.5 x 0.5 degree tile over 7 days (NetCDF download, written
  in the render lane; random boxes, so nothing is cached).

Reports p50/p95/p99 latency from the client side, 5xx and client errors (timeouts, refused or
dropped connections) per kind, the server's own latency histogram (``/metrics``), the CPU the
server and this load generator used, and the load average; appends them to bench/results.md.
The generator is a minimal HTTP/1.1 client on asyncio streams (about 0.04 cores at 200-300
requests per s here; httpx took 0.5 cores and its event-loop lag inflated every latency).
Bounded: at most ``--max-requests`` requests and ``--seconds`` s; only 127.0.0.1 is contacted.

    .venv/bin/python bench/api_load.py [--days 60] [--clients 50] [--seconds 60] [--workers 2]
        [--home DIR --keep] [--http auto|h11|httptools] [--lane process|thread] [--note TEXT]

``--keep`` keeps the built product; ``--home DIR`` reuses it (building takes about 15-40 s).
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
                "ETFUSE_DISTRIBUTION__SERVE_WITH_REGISTRY": "false",
                "ETFUSE_DISTRIBUTION__METRICS_PUBLIC": "true", "OMP_NUM_THREADS": "1",
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


class Connection:
    """One keep-alive HTTP/1.1 connection to the API, on asyncio streams.

    The load generator runs on the same 2 cores as the server, so it must cost little: httpx spent
    about 4 ms of CPU per request here (0.5 cores at 125 requests per s, its event loop lagging
    behind the responses), this reader of status line, headers and a Content-Length or chunked
    body a small fraction of that.  Each client has its own connection: 50 clients are 50
    concurrent connections.
    """

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        assert host == HOST, "the load bench talks to loopback only"
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.reader = self.writer = None
        self.reconnects = 0

    async def get(self, target: str) -> tuple[int, int]:
        """(status, body bytes) of ``GET target``.

        A keep-alive connection the server closed between two requests is reopened once and the
        GET resent, as browsers do; ``reconnects`` counts those (reported).  A failure on a fresh
        connection, or a timeout, is an error.
        """
        reused = self.writer is not None
        if not reused:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            return await asyncio.wait_for(self._exchange(target), self.timeout_s)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            if not reused:
                raise
        except BaseException:
            self.close()
            raise
        self.reconnects += 1
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            return await asyncio.wait_for(self._exchange(target), self.timeout_s)
        except BaseException:
            self.close()
            raise

    async def _exchange(self, target: str) -> tuple[int, int]:
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" in headers:
            size = int(headers["content-length"])
            await self.reader.readexactly(size)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            size = 0
            while True:
                n = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(n + 2)
                size += n
                if n == 0:
                    break
        else:
            raise ConnectionError(f"response without length: {lines[0]}")
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, size

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run_load(base: str, days: list[pd.Timestamp], clients: int, seconds: float, max_requests: int,
                   timeout_s: float) -> dict[str, dict]:
    assert base.startswith(f"http://{HOST}:"), "the load bench talks to loopback only"
    port = int(base.rsplit(":", 1)[1])
    results = {k: {"latency": [], "status": {}, "errors": []} for k in KINDS}
    deadline = time.perf_counter() + seconds
    sent = 0
    kinds, weights = list(KINDS), list(KINDS.values())

    async def client(i: int) -> None:
        nonlocal sent
        rng = random.Random(1000 + i)
        connection = Connection(HOST, port, timeout_s)
        try:
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                kind = rng.choices(kinds, weights)[0]
                url = request_for(kind, rng, days)
                t0 = time.perf_counter()
                try:
                    status, _ = await connection.get(url)
                    results[kind]["latency"].append(time.perf_counter() - t0)
                    results[kind]["status"][status] = results[kind]["status"].get(status, 0) + 1
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
                    results[kind]["errors"].append(f"{type(exc).__name__}: {exc}")
        finally:
            reconnects[0] += connection.reconnects
            connection.close()

    reconnects = [0]
    await asyncio.gather(*(client(i) for i in range(clients)))
    results["reconnects"] = reconnects[0]
    return results


def group_cpu_s(pgid: int) -> float:
    """CPU time [s] (user + system) of the live processes of process group ``pgid`` (the server,
    its uvicorn workers and their render-lane processes), from /proc."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:                 # fields after the name: state ppid pgrp ...
            total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
    return total


ROUTES = {"point": "/timeseries", "area": "/area", "map": "/overlay/{day}.png", "tile": "/subset.nc"}


def server_histograms(base: str) -> dict[str, dict[float, float]]:
    """Cumulative latency bucket counts {kind: {upper bound [s]: count}} from the API's /metrics
    (one uvicorn worker's registry: exact with --workers 1, a sample of the workers otherwise)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families
    out: dict[str, dict[float, float]] = {k: {} for k in ROUTES}
    kind_of = {v: k for k, v in ROUTES.items()}
    text = httpx.get(base + "/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        if family.name != "etfuse_http_request_duration_seconds":
            continue
        for sample in family.samples:
            kind = kind_of.get(sample.labels.get("route"))
            if sample.name.endswith("_bucket") and kind:
                out[kind][float(sample.labels["le"])] = sample.value
    return out


def server_quantile(before: dict[float, float], after: dict[float, float], q: float) -> tuple[float, float]:
    """(upper bucket bound [ms] holding the q-th percentile, share of requests <= 0.3 s) between two scrapes."""
    counts = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in sorted(after)}
    total = counts.get(float("inf"), 0.0)
    if total <= 0:
        return float("nan"), float("nan")
    bound = next(le for le, c in counts.items() if c >= q / 100 * total)
    return bound * 1000, counts.get(0.3, float("nan")) / total


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto",
                        help="uvicorn's HTTP parser (auto = httptools when installed)")
    parser.add_argument("--lane", choices=["process", "thread"], default="process",
                        help="distribution.render_lane: where subsets and overlay drawings run")
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
           "--port", str(port), "--workers", str(args.workers), "--http", args.http, "--log-level", "warning", "--no-access-log"]
    env = environment(home) | {"ETFUSE_DISTRIBUTION__RENDER_LANE": args.lane}
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    base = f"http://{HOST}:{port}"
    try:
        wait_http(base + "/ready", timeout=120, proc=server, log=log_path)
        warm_s, _ = timed(lambda: asyncio.run(run_load(base, days, 4, 3.0, 200, args.timeout)))
        print(f"warm-up done ({warm_s:.1f} s); {args.clients} clients for {args.seconds:.0f} s", flush=True)
        histograms_before = server_histograms(base)
        load_before = os.getloadavg()[0]
        server_cpu0, client_cpu0 = group_cpu_s(server.pid), sum(os.times()[:2])
        t0 = time.perf_counter()
        results = asyncio.run(run_load(base, days, args.clients, args.seconds, args.max_requests, args.timeout))
        wall = time.perf_counter() - t0
        server_cores = (group_cpu_s(server.pid) - server_cpu0) / wall
        client_cores = (sum(os.times()[:2]) - client_cpu0) / wall
        load_after = os.getloadavg()[0]
        histograms_after = server_histograms(base)
    finally:
        stop_group(server)
    server_errors = [line for line in log_path.read_text().splitlines() if "Traceback" in line or "ERROR" in line]

    now = datetime.now(timezone.utc)
    reconnects = results.pop("reconnects")
    total = sum(len(r["latency"]) + len(r["errors"]) for r in results.values())
    lines = [f"\n## api_load: {now:%Y-%m-%d %H:%M} UTC\n",
             f"`bench/api_load.py --days {len(days)} --clients {args.clients} --seconds {args.seconds:g} "
             f"--workers {args.workers} --http {args.http} --lane {args.lane}`: the API (uvicorn, {args.workers} worker "
             f"processes, HTTP parser {args.http}, render lane: {args.lane}) on 127.0.0.1 over a "
             f"full-province product (850 x 1390 cells, {len(days)} days, yearly file built); {args.clients} "
             f"concurrent clients for {wall:.0f} s, {total} requests ({total / wall:.0f} per s). point = a cell's "
             f"series over all {len(days)} days, area = 1 x 1 deg box statistics, map = the explorer's overlay PNG "
             f"of a day, tile = NetCDF subset of a 0.5 x 0.5 deg tile over 7 days.  Latency from the client side "
             f"(includes queueing in the server and the load generator's own event-loop lag); server p99 = the "
             f"API's own latency histogram (/metrics: time inside the app, without the socket and HTTP parsing; "
             f"the upper bound of the bucket holding the 99th percentile{'' if args.workers == 1 else ', one worker of ' + str(args.workers)}). CPU during the run: server (all its processes) {server_cores:.2f} "
             f"cores, load generator (this process, asyncio streams) {client_cores:.2f} cores; 1-minute load "
             f"average {load_before:.1f} before, {load_after:.1f} after.{(' ' + args.note) if args.note else ''}\n",
             "| kind | requests | p50 [ms] | p95 [ms] | p99 [ms] | max [ms] | 5xx | other non-200 | errors | "
             "server p99 [ms] (bucket bound) | server <= 300 ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind, r in results.items():
        server_p99, server_share = server_quantile(histograms_before[kind], histograms_after[kind], 99)
        lat = [v * 1000 for v in r["latency"]]
        five = sum(n for code, n in r["status"].items() if code >= 500)
        other = sum(n for code, n in r["status"].items() if code != 200 and code < 500)
        lines.append(f"| {kind} | {len(lat) + len(r['errors'])} | {percentile(lat, 50):.0f} | {percentile(lat, 95):.0f} | "
                     f"{percentile(lat, 99):.0f} | {max(lat, default=float('nan')):.0f} | {five} | {other} | "
                     f"{len(r['errors'])} | <= {server_p99:.0f} | {server_share:.1%} |")
    errors = [e for r in results.values() for e in r["errors"]][:3]
    lines += ["", f"Server log: {len(server_errors)} error lines. Keep-alive connections reopened by the "
                  f"clients (closed by the server between two requests, GET resent): {reconnects}. " + (f"First client errors: {errors}. " if errors else "")
              + f"Machine: {machine_facts('fastapi', 'uvicorn', 'httptools', 'uvloop', 'netCDF4')}.", ""]
    publish(lines, append=not args.no_append)
    if args.keep or args.home:
        print(f"kept {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
