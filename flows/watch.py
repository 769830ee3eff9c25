"""Runs when data arrive: watch ``landing/`` and start the ingest + update deployment per delivery.

Built on watchfiles (inotify, or polling with ``watch.force_polling``).  A delivery is a burst of
files: changes are grouped until nothing new landed for ``watch.quiet_s`` or the burst is
``watch.max_wait_s`` old, so a month of files copied in one go makes one run, not hundreds.  The
grouping is done here, on watchfiles' batches read every ``TICK_MS``: watchfiles' own ``step``
sleeps a whole step before it even looks, and yields only after a second step without change, so
``step = quiet_s`` started a run between 1 and 2 times ``quiet_s`` after the last file (measured:
18 s for a 10 s quiet period, bench/arrival.py).  Files that ingest would skip (hidden names such
as rsync's temporaries, ``ingest.partial_suffixes``, files directly in ``landing/``) do not count.  While a
started run has not begun yet (scheduled, pending, late), further deliveries start nothing: that
run's ingest will find them.  Once it runs, the next delivery starts another run, which the
deployment's concurrency limit queues.  The daily cron stays as the catch-up.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from etfuse.settings import Settings

log = logging.getLogger(__name__)

#: a trigger starts a run and returns something ``pending`` can ask about (or None)
Trigger = Callable[[list[Path]], object]

#: how often the watcher looks at the changes watchfiles collected [ms]: a delivery starts its run
#: between ``quiet_s`` and ``quiet_s`` + 2 ticks after its last file, and ``stop`` is seen within a tick
TICK_MS = 200


def counts_as_delivery(path: Path, settings: Settings) -> bool:
    """True for a file ingest would take: ``landing/<source>/<name>``, not hidden, not partial."""
    landing = settings.folder("landing").resolve()
    try:
        parts = path.resolve().relative_to(landing).parts
    except ValueError:
        return False
    return (len(parts) == 2 and not any(p.startswith(".") for p in parts)
            and not parts[-1].endswith(tuple(settings.ingest.partial_suffixes)))


def deliveries(changes: Iterable[tuple[object, str]], settings: Settings) -> list[Path]:
    """The landed files in one batch of watchfiles changes (added or modified, still present)."""
    from watchfiles import Change
    out = {Path(p) for change, p in changes if change in (Change.added, Change.modified)}
    return sorted(p for p in out if p.is_file() and counts_as_delivery(p, settings))


def new_source_folders(changes: Iterable[tuple[object, str]], settings: Settings) -> list[Path]:
    """``landing/<source>`` folders created in one batch of changes.

    inotify watches a new folder only once it has seen the folder appear: files written into it
    right after its creation (a first delivery of a source, ``cp -r``) give no events of their own,
    so the folder's files are listed when the burst settles.
    """
    from watchfiles import Change
    landing = settings.folder("landing").resolve()
    out = set()
    for change, p in changes:
        path = Path(p)
        if change == Change.added and path.is_dir() and path.resolve().parent == landing \
                and not path.name.startswith("."):
            out.add(path)
    return sorted(out)


def deployment_trigger(settings: Settings, *, config: str | None = None) -> tuple[Trigger, Callable[[object], bool]]:
    """(start a run of ``watch.deployment``, is that run still waiting to start?) against the Prefect server."""
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment

    def start(files: list[Path]):
        run = run_deployment(settings.watch.deployment, parameters={"config": config} if config else {},
                             timeout=0, as_subflow=False, tags=["etfuse-arrival"])
        log.info("%d file(s) landed; started %s run %s", len(files), settings.watch.deployment, run.id)
        return run.id

    def pending(run_id) -> bool:
        from prefect import get_client
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state
        return state is not None and state.type in (StateType.SCHEDULED, StateType.PENDING)

    return start, pending


def watch_landing(settings: Settings, trigger: Trigger, *, pending: Callable[[object], bool] | None = None,
                  stop: threading.Event | None = None) -> int:
    """Watch ``landing/`` until ``stop`` is set; one ``trigger`` per settled delivery. Returns how many."""
    from watchfiles import watch
    landing = settings.folder("landing")
    landing.mkdir(parents=True, exist_ok=True)
    w = settings.watch
    started, last = 0, None
    burst: set[Path] = set()
    first_at = latest_at = 0.0
    # watchfiles yields a batch once the folder was still for one tick (or after two ticks of steady
    # changes), and an empty batch every tick or so while nothing happens: the clock is checked here
    for changes in watch(landing, stop_event=stop, step=TICK_MS, debounce=2 * TICK_MS, rust_timeout=TICK_MS,
                         yield_on_timeout=True, force_polling=w.force_polling, raise_interrupt=False, recursive=True):
        now = time.monotonic()
        files = deliveries(changes, settings) + new_source_folders(changes, settings)
        if files:
            if not burst:
                first_at = now
            burst.update(files)
            latest_at = now
        if not burst or (now - latest_at < w.quiet_s and now - first_at < w.max_wait_s):
            continue
        settled = {f for p in burst if p.is_dir() for f in p.iterdir()} | {p for p in burst if not p.is_dir()}
        # a file taken meanwhile (by the cron's run) is gone
        landed = sorted(p for p in settled if p.is_file() and counts_as_delivery(p, settings))
        burst.clear()
        if not landed:
            continue
        if last is not None and pending is not None and pending(last):
            log.info("%d file(s) landed; the run started before has not begun and will take them", len(landed))
            continue
        last = trigger(landed)
        started += 1
    return started
