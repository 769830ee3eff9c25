"""The render lane: expensive requests run apart from the cheap ones, so point and area reads never queue behind them.

Point series and area statistics cost 1-15 ms of CPU; a NetCDF subset costs 50-200 ms and the
first drawing of a day's map overlay about 0.2 s.  Before this lane, all of them ran in the same
thread pool of the API process (anyio's 40 threads) and under the same netCDF lock and GIL: under
50 concurrent clients, downloads waiting for their slot held threads, and a rendering thread held
the GIL, so a 5 ms point read waited seconds (bench/results.md, api_load before 07:30 UTC
2026-12-06).

Here the expensive work goes to a small executor of its own:

* ``lane = "process"`` (default): ``distribution.max_concurrent_downloads`` worker processes
  (started with ``spawn``: the API process has threads, and ``fork`` would copy held locks), each
  with its own product store, netCDF handles and GIL, and a lower CPU priority
  (``distribution.render_nice``), so the scheduler gives the API process the CPU first when both
  want it.  Cheap requests then need only a core that is not rendering.
* ``lane = "thread"``: as many threads of the API process (the GIL and the netCDF lock are still
  shared; for tests and tiny deployments).

Waiting for the lane is ``await``-ed, so a waiting render holds no thread: the threads stay free
for point and area reads.  At most ``distribution.render_queue`` renders wait per API process; one
more is answered 503 with ``Retry-After`` (a bounded queue instead of an unbounded memory and
latency debt).  A lane process that dies (killed, out of memory) fails the renders it had with 503
and is replaced on the next render.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable

from fastapi import HTTPException

from etfuse.settings import Settings
from serving.product import ProductStore

log = logging.getLogger(__name__)

#: the product store of a lane worker process (made once by :func:`_start_worker`)
_WORKER_STORE = None


def _start_worker(settings: Settings, nice: int) -> None:
    """Initializer of a lane process: lower priority, and its own product store (no reconcile)."""
    global _WORKER_STORE
    if nice:
        os.nice(nice)
    _WORKER_STORE = ProductStore(settings, reconcile=False)


def _in_worker(fn: Callable[..., Any], *args) -> Any:
    """Run ``fn(store, *args)`` with the worker process's own store."""
    return fn(_WORKER_STORE, *args)


class RenderLane:
    """Runs expensive product work (``fn(product, *args)``) off the threads that answer cheap requests."""

    def __init__(self, settings: Settings, product) -> None:
        dist = settings.distribution
        self.settings, self.product = settings, product
        self.kind, self.width, self.queue_limit = dist.render_lane, dist.max_concurrent_downloads, dist.render_queue
        self._executor: Executor | None = None
        self._lock = threading.Lock()
        self.waiting = 0            # renders submitted and not finished (touched on the event loop only)

    def _pool(self) -> Executor:
        with self._lock:
            if self._executor is None:
                if self.kind == "process":
                    self._executor = ProcessPoolExecutor(
                        max_workers=self.width, mp_context=multiprocessing.get_context("spawn"),
                        initializer=_start_worker, initargs=(self.settings, self.settings.distribution.render_nice))
                else:
                    self._executor = ThreadPoolExecutor(max_workers=self.width, thread_name_prefix="etfuse-render")
            return self._executor

    async def run(self, fn: Callable[..., Any], *args) -> Any:
        """``fn(product, *args)`` on the lane; 503 when ``render_queue`` renders already wait."""
        if self.waiting >= self.queue_limit:
            raise HTTPException(503, f"{self.waiting} map and subset renders are waiting (at most "
                                     f"{self.queue_limit}); retry shortly", headers={"Retry-After": "5"})
        self.waiting += 1
        try:
            if self.kind == "process":
                future = self._pool().submit(_in_worker, fn, *args)
            else:
                future = self._pool().submit(fn, self.product, *args)
            return await asyncio.wrap_future(future)
        except BrokenExecutor:
            # a worker process died (killed, out of memory): the next render starts a fresh pool
            log.error("the render lane's worker process stopped; starting a new one for the next render")
            with self._lock:
                if self._executor is not None:
                    self._executor.shutdown(wait=False, cancel_futures=True)
                    self._executor = None
            raise HTTPException(503, "the map and subset renderer restarted; retry shortly",
                                headers={"Retry-After": "1"}) from None
        finally:
            self.waiting -= 1

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
