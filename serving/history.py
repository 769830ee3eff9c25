"""The history recompute: every stale product day, in chunks, in the background, giving way to today.

After a promotion or a rollback every product day is stale (1990-2023: ~12,400 days at 2-3 s on
2 cores, hours of work).  The daily run computes only the newest ``update.recent_days`` of them
(serving/update.py, ``max_days``) and hands the rest here:

* **chunked**: ``update.history_chunk_days`` days per chunk, the newest chunk first, each chunk in
  date order (window embeddings reused inside it); the product lock is taken per chunk;
* **gives way**: before each chunk it waits while a daily run is waiting for the lock
  (``product_lock(priority=False)``), and inside a chunk it stops before the next day or the next
  window day's embedding when a daily run starts waiting (``run_update(priority=False)``), so the
  newest day waits for at most one embedding or one day's readout and write, not a chunk (measured
  in bench/arrival.py: a 30-day chunk made it wait minutes);
* **resumable**: nothing is remembered but the product itself: each chunk is planned again from
  the product's fingerprints, so a killed or cancelled run resumes where it stopped, and days a
  daily run computed meanwhile are skipped;
* **lower priority**: the flow adds ``update.history_nice`` to its process's niceness;
* **progress**: ``progress(done, total, first_day, last_day)`` after each chunk (a Prefect progress
  artifact and log lines in flows/history.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from etfuse.settings import Settings
from etfuse.store import HarmonisedStore
from serving.update import plan_days, product_lock, run_update

log = logging.getLogger(__name__)

Progress = Callable[[int, int, pd.Timestamp, pd.Timestamp], None]


@dataclass
class HistoryReport:
    model_version: int | None = None
    chunks: int = 0
    written: dict[str, str] = field(default_factory=dict)
    years_rebuilt: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"history recompute with model v{self.model_version}: {len(self.written)} day(s) in "
                f"{self.chunks} chunk(s), {self.seconds:.0f} s")


def stale_days(settings: Settings, store: HarmonisedStore, product, *, model_version: int, window_days: int,
               start=None, end=None) -> list[pd.Timestamp]:
    """The stale product days, oldest first."""
    plans = plan_days(settings, store, product, model_version=model_version, window_days=window_days,
                      start=start, end=end)
    return [p.day for p in plans if p.reason != "up to date"]


def recompute_history(settings: Settings, *, predictor, product, store: HarmonisedStore | None = None,
                      start=None, end=None, chunk_days: int | None = None, progress: Progress | None = None,
                      max_chunks: int | None = None) -> HistoryReport:
    """Every stale day in [start, end], newest chunk first, one product-lock hold per chunk."""
    store = store or HarmonisedStore.of(settings)
    chunk_days = chunk_days or settings.update.history_chunk_days
    model = predictor.model()
    report = HistoryReport(model_version=model.version)
    t0 = time.perf_counter()
    total = len(stale_days(settings, store, product, model_version=model.version, window_days=model.window_days,
                           start=start, end=end))
    done = 0
    years: set[int] = set()
    report_days: set[pd.Timestamp] = set()
    while max_chunks is None or report.chunks < max_chunks:
        days = stale_days(settings, store, product, model_version=model.version, window_days=model.window_days,
                          start=start, end=end)
        if not days:
            break
        chunk = days[-chunk_days:]
        # one lock hold; a waiting daily run goes first (priority=False); the years are built once at the end
        part = run_update(settings, predictor=predictor, product=product, store=store, start=chunk[0],
                          end=chunk[-1], build_years=False, priority=False)
        report.chunks += 1
        report.written.update(part.written)
        years |= {pd.Timestamp(d).year for d in part.written}
        done += len(part.written)
        total = max(total, done + len(days) - len(part.written))
        log.info("history: %d/%d days (%s..%s written)", done, total, f"{chunk[0]:%Y-%m-%d}", f"{chunk[-1]:%Y-%m-%d}")
        if progress:
            progress(done, total, chunk[0], chunk[-1])
        # days written before are stale again, or nothing done without giving way: stop, never spin.  A
        # chunk cut short because a daily run was waiting is planned again once the lock is free
        # (product_lock(priority=False) waits while the daily run is waiting: no spinning either)
        written = {pd.Timestamp(d) for d in part.written}
        if written & report_days or (not written and part.gave_way_after is None):
            break
        report_days.update(written)
    if years:
        with product_lock(settings, priority=False):
            for year in sorted(years):
                product.build_year(year)
                report.years_rebuilt.append(year)
    report.seconds = time.perf_counter() - t0
    log.info(report.summary())
    return report
