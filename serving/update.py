"""Which product days to compute, and computing them in date order.

A product day D depends on the inputs of its window D-T+1..D (T = the model's window).  Its
*input fingerprint* is a sha256 over the content hashes, in the harmonised store's ledger, of every
stored variable of every source on those days, plus the DEM's hash.  A day is computed when
ERA5-Land ET is stored for D (the one source every day needs) and the product lacks it, or holds
it with another fingerprint (new, revised or late inputs: a GLEAM file arriving a year late
changes the fingerprint of every day it covers) or another model version.  A day is *final* when
every window day has GLEAM and final (not ERA5T) ERA5-Land, else *provisional*; provisional days
become final by this same rule when their inputs arrive.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from etfuse.errors import EtfuseError
from etfuse.features import InputReader, elevation_on_grid, grid_day
from etfuse.settings import Settings
from etfuse.sources.common import file_sha256
from etfuse.store import HarmonisedStore
from serving.predictor import DayEmbeddings

log = logging.getLogger(__name__)


class UpdateLockedError(EtfuseError):
    """Another update holds the product lock."""


@dataclass(frozen=True)
class DayPlan:
    day: pd.Timestamp
    fingerprint: str
    status: str                    # provisional | final
    reason: str                    # missing | inputs changed | new model | status changed | up to date


@dataclass
class UpdateReport:
    planned: list[DayPlan] = field(default_factory=list)
    written: dict[str, str] = field(default_factory=dict)       # day -> written | replaced | unchanged
    seconds_per_day: list[float] = field(default_factory=list)
    model_version: int | None = None
    years_rebuilt: list[int] = field(default_factory=list)
    #: stale days left for the history recompute (older than the ``max_days`` newest)
    deferred: list[pd.Timestamp] = field(default_factory=list)
    #: day -> the onnxruntime execution provider that computed it (``CPUExecutionProvider``, ...)
    providers: dict[str, str] = field(default_factory=dict)
    #: a non-priority run (the history recompute) stopped after this many days because a priority run
    #: (the daily run) was waiting for the product lock; the rest stays stale for its next chunk
    gave_way_after: int | None = None

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for action in self.written.values():
            counts[action] = counts.get(action, 0) + 1
        per_day = f", median {np.median(self.seconds_per_day):.2f} s/day" if self.seconds_per_day else ""
        later = f"; {len(self.deferred)} older stale day(s) left to the history recompute" if self.deferred else ""
        on = f" on {', '.join(sorted(set(self.providers.values())))}" if self.providers else ""
        return (f"update with model v{self.model_version}: {len(self.planned)} day(s) to compute "
                f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items())) or 'nothing to do'}){on}{per_day}{later}")


def _dem_hash(settings: Settings) -> str:
    path = settings.static.elevation_file
    return file_sha256(path) if path else "no-dem"


def plan_days(settings: Settings, store: HarmonisedStore, product, *, model_version: int, window_days: int,
              start=None, end=None) -> list[DayPlan]:
    """Every day in [start, end] that has ERA5-Land ET, with its fingerprint, status and whether to compute."""
    era5 = store.grid_days("era5land")
    if not era5:
        return []
    first_day = settings.serving.first_day
    if start is None and first_day is not None:
        start = max(pd.Timestamp(first_day), era5[0])
    start = pd.Timestamp(start) if start is not None else era5[0]
    end = pd.Timestamp(end) if end is not None else era5[-1]
    ledger = store.latest_grid_versions(start - pd.Timedelta(days=window_days - 1), end)
    dem = _dem_hash(settings)
    plans = []
    for day in pd.date_range(start, end, freq="D"):
        key = f"{day:%Y-%m-%d}"
        if "et" not in ledger.get(("era5land", key), {}):
            continue
        h = hashlib.sha256(f"window={window_days};dem={dem}".encode())
        final = True
        for d in pd.date_range(day - pd.Timedelta(days=window_days - 1), day, freq="D"):
            dk = f"{d:%Y-%m-%d}"
            for source in ("era5land", "gleam", "modis"):
                entry = ledger.get((source, dk), {})
                for variable in sorted(entry):
                    h.update(f"{source}:{dk}:{variable}:{entry[variable][0]};".encode())
            era5_day = ledger.get(("era5land", dk), {})
            final &= "et" in ledger.get(("gleam", dk), {}) and bool(era5_day) and all(
                stream == "final" for _, stream in era5_day.values())
        fingerprint = h.hexdigest()
        record = product.record(day)
        if record is None:
            reason = "missing"
        elif record.fingerprint != fingerprint:
            reason = "inputs changed"
        elif record.model_version != model_version:
            reason = "new model"
        elif record.status != ("final" if final else "provisional"):
            reason = "status changed"        # ERA5T confirmed unchanged by final ERA5-Land: same values, now final
        else:
            reason = "up to date"
        plans.append(DayPlan(day, fingerprint, "final" if final else "provisional", reason))
    return plans


#: a daily run waiting for the product lock touches this file; the history recompute lets it in
WAITING_NAME = ".update.waiting"
#: a waiting marker older than this is left over from a killed run and ignored [s]
_WAITING_STALE_S = 600.0


def newest_first(days: list[pd.Timestamp], chunk_days: int) -> list[pd.Timestamp]:
    """The newest day alone first, then the others in chunks of ``chunk_days``, the newest chunk
    first, each chunk in date order (so the window embeddings of consecutive days are still reused
    inside a chunk).  The newest day goes alone: in date order it would wait for every older day of
    its chunk (measured: 13 days, 76 s on 2 busy cores, bench/arrival.py); alone it costs its
    window's embeddings once more."""
    ordered = sorted(days)
    newest, rest = ordered[-1:], ordered[:-1]
    chunks = [rest[max(0, k - chunk_days):k] for k in range(len(rest), 0, -chunk_days)]
    return newest + [d for chunk in chunks for d in chunk]


def _others_waiting(folder) -> bool:
    marker = folder / WAITING_NAME
    try:
        return time.time() - marker.stat().st_mtime < _WAITING_STALE_S
    except FileNotFoundError:
        return False


@contextmanager
def product_lock(settings: Settings, *, wait_s: float | None = None, priority: bool = True) -> Iterator[None]:
    """One update at a time: two runs never write the product together; the second waits (queues).

    Waits up to ``wait_s`` (default ``update.lock_wait_s``) and then raises UpdateLockedError.  A
    ``priority`` waiter (the daily run) marks itself waiting, and a non-priority holder (the history
    recompute, between two chunks) does not take the lock again while one is waiting: the newest
    day is delayed by at most one history chunk.
    """
    folder = settings.folder("product")
    folder.mkdir(parents=True, exist_ok=True)
    wait_s = settings.update.lock_wait_s if wait_s is None else wait_s
    poll = settings.update.lock_poll_s
    deadline = time.monotonic() + wait_s
    marker = folder / WAITING_NAME
    with open(folder / ".update.lock", "w") as handle:
        announced = False
        try:
            while True:
                if priority or not _others_waiting(folder):
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        pass
                if time.monotonic() >= deadline:
                    raise UpdateLockedError(f"another update is running (lock {folder / '.update.lock'} is held) "
                                            f"and did not end within {wait_s:g} s (update.lock_wait_s); it will "
                                            "compute the stale days, or run again when it ends")
                if priority:
                    if not announced:
                        log.warning("another update holds the product lock; waiting up to %g s", wait_s)
                        announced = True
                    marker.touch()
                time.sleep(poll)
        finally:
            if announced:
                marker.unlink(missing_ok=True)
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_update(settings: Settings, *, predictor, product, store: HarmonisedStore | None = None, start=None, end=None,
               only_stale: bool = True, progress: Callable[[int, int, pd.Timestamp], None] | None = None,
               build_years: bool = True, lock: bool = True, newest: bool = False, max_days: int | None = None,
               priority: bool = True) -> UpdateReport:
    """Compute every stale product day in [start, end] in date order; returns what was done.

    ``lock=False`` is for the chunks of a backfill, whose flow holds the product lock for them.
    ``newest=True`` (the daily run) computes the newest chunks of ``update.history_chunk_days``
    first; ``max_days`` computes only that many of the newest stale days and reports the older ones
    as ``deferred`` (the history recompute's work).  ``priority=False`` (the history recompute)
    gives way to a waiting priority run before taking the lock, and after any day while holding it
    (``report.gave_way_after``; the days not computed stay stale).
    """
    store = store or HarmonisedStore.of(settings)
    model = predictor.model()
    report = UpdateReport(model_version=model.version)
    with product_lock(settings, priority=priority) if lock else contextlib.nullcontext():
        plans = plan_days(settings, store, product, model_version=model.version, window_days=model.window_days,
                          start=start, end=end)
        todo = [p for p in plans if p.reason != "up to date" or not only_stale]
        if max_days is not None and len(todo) > max_days:
            report.deferred = [p.day for p in todo[:-max_days]]
            todo = todo[-max_days:]
        if newest:
            by_day = {p.day: p for p in todo}
            todo = [by_day[d] for d in newest_first(list(by_day), settings.update.history_chunk_days)]
        report.planned = todo
        # a yearly file left stale (a crash during its build, a deleted file) is rebuilt even with no day to compute
        stale_years = set(product.stale_years()) if build_years else set()
        if not todo:
            for year in sorted(stale_years):
                product.build_year(year)
                report.years_rebuilt.append(year)
            return report
        reader = InputReader(store, settings)
        elevation = elevation_on_grid(settings, reader.grid, reader.cache)
        embeddings = DayEmbeddings(model, settings.serving.feature_cache_days)
        present: dict[pd.Timestamp, set[str]] = {}
        folder = settings.folder("product")

        def give_way() -> bool:
            """A non-priority run (the history) stops when the daily run starts waiting for the lock:
            checked before each day and before each window day's embedding, so the newest day waits at
            most one embedding or one day's readout and write; the days not written stay stale."""
            return not priority and lock and _others_waiting(folder)

        for k, plan in enumerate(todo):
            t0 = time.perf_counter()
            if k and plan.day < todo[k - 1].day:      # newest first: an older chunk starts; its window is not cached
                embeddings = DayEmbeddings(model, settings.serving.feature_cache_days)
            window = pd.date_range(plan.day - pd.Timedelta(days=model.window_days - 1), plan.day, freq="D")
            for day in window:
                if day not in embeddings:
                    if give_way():
                        break
                    x_day, present[day] = grid_day(reader, day, elevation)
                    embeddings.add(day, predictor.embed(model, x_day))
            if any(day not in embeddings for day in window):
                report.gave_way_after = k
                log.info("a priority update is waiting for the product lock: giving way after %d of %d day(s)",
                         k, len(todo))
                break
            fields = predictor.readout_day(model, [embeddings.days[d] for d in window], reader.grid.shape, plan.day)
            previous = product.record(plan.day)
            if previous is not None and previous.status == "final" and plan.status == "provisional":
                log.warning("%s goes back from final to provisional: its inputs now include preliminary data",
                            f"{plan.day:%Y-%m-%d}")
            # the product says what its inputs are, even when that is a step back
            action = product.write_day(plan.day, fields.et, model_version=model.version, status=plan.status,
                                       sources_used=present[plan.day], fingerprint=plan.fingerprint,
                                       allow_downgrade=True, execution_provider=model.execution_provider,
                                       bounds=fields.bounds)
            report.written[f"{plan.day:%Y-%m-%d}"] = action
            report.providers[f"{plan.day:%Y-%m-%d}"] = model.execution_provider
            report.seconds_per_day.append(time.perf_counter() - t0)
            if progress:
                progress(k + 1, len(todo), plan.day)
        done = todo[:len(report.seconds_per_day)]
        store.reprocess_done([p.day for p in done])
        if build_years:
            for year in sorted({p.day.year for p in done} | stale_years):
                product.build_year(year)
                report.years_rebuilt.append(year)
    log.info(report.summary())
    return report


__all__ = ["DayPlan", "UpdateReport", "plan_days", "run_update", "product_lock", "UpdateLockedError", "newest_first"]
