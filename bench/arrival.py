"""From a day's files landing to its product day written, on the full province; alone and while a
1-year history recompute runs.

Builds (or reuses, ``--home``) a synthetic year harmonised into a store with a promoted model
(``bench/backfill.py``'s ``prepare``), then plays daily deliveries: each arrival is one new day's
ERA5-Land file and MODIS LST file, generated beforehand (the same synthetic world code, one day
each) and copied into ``landing/`` as a fetcher would.  What runs is what the daily deployment runs
after ``etfuse watch`` started it: the real watcher (watchfiles, ``watch.quiet_s`` debounce) on
``landing/``, whose trigger ingests (validation included) and updates the product newest day first
(``run_update(newest=True, max_days=update.recent_days)``) with a fresh predictor resolved from the
registry.  Timed from the copy of the first file to the day's product file being written, split into
debounce, ingest and update-until-written.

* ``steady``: the product is up to date (``serving.first_day`` 30 days back) and each arrival is the
  only work;
* ``history``: a separate process recomputes the whole year of product days (``recompute_history``,
  niced by ``update.history_nice``, chunks of ``update.history_chunk_days``) while the days arrive;
  the daily path waits for the product lock, which the history gives up between chunks.

Not included (the stack's own latencies, not this code's): the Prefect worker's polling interval
(``PREFECT_WORKER_QUERY_SECONDS``, 10 s by default) and the start of the flow-run process (imports,
about 5-10 s on 2 cores).

    python bench/arrival.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

#: the prepared store ends the day before (a fresh --home); later runs continue after its newest day
FIRST_ARRIVAL = pd.Timestamp("2021-12-31")


def arrival_files(home: Path, day: pd.Timestamp, settings) -> list[Path]:
    """The ERA5-Land and MODIS files of one new day (generated once, outside ``landing/``)."""
    from etfuse.synth.world import WorldSpec, generate
    folder = home / "arrivals" / f"{day:%Y%m%d}"
    if not (folder / "landing").exists():
        generate(folder, WorldSpec(bbox=settings.region.bbox, start=f"{day:%Y-%m-%d}", end=f"{day:%Y-%m-%d}", seed=3,
                                   resolution_deg=settings.region.resolution_deg, margin_deg=settings.region.margin_deg))
    return sorted((folder / "landing" / "era5land").glob("*.nc")) + sorted((folder / "landing" / "modis").glob("*"))


def write_config(home: Path, base: Path, name: str, **update) -> Path:
    data = json.loads(base.read_text())
    for section, values in update.items():
        data.setdefault(section, {}).update(values)
    path = home / name
    path.write_text(json.dumps(data))
    return path


def daily_path(settings, day: pd.Timestamp, marks: dict) -> None:
    """Ingest everything in landing/, then the newest stale product days (what `daily` does)."""
    from etfuse.ingest import IngestContext, discover, ingest_file
    from serving.predictor import Predictor
    from serving.product import ProductStore
    from serving.update import run_update
    from training.registry import ModelRegistry
    marks["triggered"] = time.perf_counter()
    ctx = IngestContext.create(settings)
    files, skipped = discover(settings)
    outcomes = [ingest_file(lf, ctx) for lf in files]
    ctx.dispatcher.flush()
    marks["ingested"] = time.perf_counter()
    marks["ingest"] = [f"{o.source}/{o.file}: {o.status}" for o in outcomes] + skipped

    def progress(k, n, written_day):
        if written_day == day and "written" not in marks:
            marks["written"] = time.perf_counter()

    import contextlib

    import serving.update as update
    lock = update.product_lock

    @contextlib.contextmanager
    def timed_lock(*a, **kw):                             # when the daily run got the product lock
        marks["lock_asked"] = time.perf_counter()
        with lock(*a, **kw):
            marks["locked"] = time.perf_counter()
            yield

    update.product_lock = timed_lock
    try:
        predictor = Predictor(settings, registry=ModelRegistry(settings))
        predictor.model()                                 # the champion resolved and loaded from the registry
        marks["model"] = time.perf_counter()
        report = run_update(settings, predictor=predictor, product=ProductStore(settings), progress=progress,
                            newest=True, max_days=settings.update.recent_days)
    finally:
        update.product_lock = lock
    marks["update_done"] = time.perf_counter()
    marks["summary"] = report.summary()


def one_arrival(settings, files: list[Path], day: pd.Timestamp) -> dict:
    """Start the watcher, land the files, wait until the day is written; returns the marks [s]."""
    from flows.watch import watch_landing
    marks: dict = {}
    stop = threading.Event()
    errors: list[BaseException] = []

    def trigger(landed):
        try:
            daily_path(settings, day, marks)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)
        stop.set()

    watcher = threading.Thread(target=watch_landing, args=(settings, trigger), kwargs={"stop": stop}, daemon=True)
    watcher.start()
    time.sleep(2.0)                                       # the watcher is watching
    marks["landed"] = time.perf_counter()
    for path in files:
        source = "era5land" if path.parent.name == "era5land" else "modis"
        target = settings.folder("landing") / source / (f"era5land_{day:%Y%m%d}.nc" if source == "era5land" else path.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")    # copied under a partial name, then renamed (as fetch does)
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
    watcher.join(timeout=900)
    stop.set()
    if errors:
        raise errors[0]
    if "written" not in marks:
        raise RuntimeError(f"{day:%Y-%m-%d} was not written: {marks}")
    t = marks["landed"]
    return {"day": f"{day:%Y-%m-%d}", "total": marks["written"] - t, "debounce": marks["triggered"] - t,
            "ingest": marks["ingested"] - marks["triggered"], "update": marks["written"] - marks["ingested"],
            "model": marks["model"] - marks["ingested"], "lock_wait": marks["locked"] - marks["lock_asked"],
            "compute": marks["written"] - marks["locked"],
            "summary": marks["summary"], "ingest_outcomes": marks["ingest"]}


def start_history(config: Path, log: Path) -> subprocess.Popen:
    """The history recompute of every stale day (the whole year), as the `history` deployment runs it."""
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from etfuse.settings import load_settings\n"
        "from serving.history import recompute_history\n"
        "from serving.predictor import Predictor\n"
        "from serving.product import ProductStore\n"
        "from training.registry import ModelRegistry\n"
        f"s = load_settings(Path({str(config)!r}))\n"
        "os.nice(s.update.history_nice)\n"
        "r = recompute_history(s, predictor=Predictor(s, registry=ModelRegistry(s)), product=ProductStore(s))\n"
        "print(r.summary(), flush=True)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-c", code], stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def wait_history_holds_lock(settings, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until the history process writes product days (it holds the lock, a chunk is under way)."""
    from serving.product import ProductStore
    before = len(ProductStore(settings, reconcile=False).records())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the history recompute ended before the arrival")
        if len(ProductStore(settings, reconcile=False).records()) > before:
            return
        time.sleep(1.0)
    raise RuntimeError("the history recompute wrote nothing within the timeout")


def main() -> None:
    from bench.backfill import prepare
    from bench.report import machine_facts, publish
    from etfuse.settings import load_settings
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path("/tmp/etfuse-bench-arrival"))
    parser.add_argument("--start", default="2021-01-01")
    parser.add_argument("--runs", type=int, default=3, help="arrivals per case (consecutive days)")
    parser.add_argument("--cases", default="steady,history")
    parser.add_argument("--quiet-s", type=float, default=None, help="watch.quiet_s (default: the settings' 10 s)")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    for key, value in {"ORT_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}.items():
        os.environ.setdefault(key, value)
    last_stored = FIRST_ARRIVAL - pd.Timedelta(days=1)
    base = prepare(args.home, "qinghai", args.start, f"{last_stored:%Y-%m-%d}")
    watch = {"quiet_s": args.quiet_s} if args.quiet_s else {}
    cases = args.cases.split(",")
    settings0 = load_settings(base)
    from etfuse.store import HarmonisedStore
    first = HarmonisedStore.of(settings0).grid_days("era5land")[-1] + pd.Timedelta(days=1)
    days = [first + pd.Timedelta(days=k) for k in range(args.runs * len(cases))]
    files = {day: arrival_files(args.home, day, settings0) for day in days}
    results: dict[str, list[dict]] = {}
    history_info = ""
    for c, case in enumerate(cases):
        case_days = days[c * args.runs:(c + 1) * args.runs]
        if case == "steady":
            # the product up to date for 30 days back: each arrival is the only work
            first = case_days[0] - pd.Timedelta(days=30)
            config = write_config(args.home, base, "steady.yaml", serving={"first_day": f"{first:%Y-%m-%d}"},
                                  ingest={"min_age_seconds": 10}, watch=watch)
            settings = load_settings(config)
            from serving.predictor import Predictor
            from serving.product import ProductStore
            from serving.update import run_update
            from training.registry import ModelRegistry
            t = time.perf_counter()
            run_update(settings, predictor=Predictor(settings, registry=ModelRegistry(settings)),
                       product=ProductStore(settings))
            print(f"steady: product up to date from {first:%Y-%m-%d} in {time.perf_counter() - t:.0f} s", flush=True)
            results[case] = []
            for day in case_days:
                r = one_arrival(settings, files[day], day)
                print(f"steady {r['day']}: {r['total']:.1f} s ({r['summary']})", flush=True)
                results[case].append(r)
        elif case == "history":
            config = write_config(args.home, base, "history.yaml", ingest={"min_age_seconds": 10}, watch=watch)
            settings = load_settings(config)
            stale = 0
            proc = start_history(config, args.home / "history.log")
            try:
                wait_history_holds_lock(settings, proc)
                from serving.product import ProductStore
                done_before = len(ProductStore(settings, reconcile=False).records())
                results[case] = []
                for day in case_days:
                    r = one_arrival(settings, files[day], day)
                    print(f"history {r['day']}: {r['total']:.1f} s (lock wait {r['lock_wait']:.1f} s, window and write "
                      f"{r['compute']:.1f} s; {r['summary']})", flush=True)
                    results[case].append(r)
                stale = len(ProductStore(settings, reconcile=False).records()) - done_before
                history_info = (f"The history process was still running when the last arrival was written "
                                f"({proc.poll() is None}); product days written meanwhile (history + arrivals): {stale}.")
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, 15)
                    proc.wait(timeout=60)
    from etfuse.grid import TargetGrid
    s = load_settings(base)
    shape = TargetGrid.from_region(s.region).shape
    lines = [f"\n## arrival: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n",
             f"`bench/arrival.py --runs {args.runs} --cases {args.cases}`: full province ({s.region.name}, "
             f"{shape[0]} x {shape[1]} cells), one day's ERA5-Land and MODIS files copied into landing/ "
             f"(renamed from .part); the real watcher (watch.quiet_s {load_settings(config).watch.quiet_s:g} s), "
             "then ingest with validation and the newest-first update with a fresh predictor from the registry "
             f"(serving.threads {s.serving.threads}); timed from the first copy to the day's product file written. "
             "Prefect's worker polling and flow-run process start are not included (see the script).\n",
             "| case | arrivals | total median [s] | max [s] | debounce [s] | ingest [s] | update until written [s] "
             "| of which: model load [s] | lock wait [s] | the day's window and write [s] |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for case, rs in results.items():
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        lines.append(f"| {case} | {len(rs)} | {med('total'):.1f} | {max(r['total'] for r in rs):.1f} | "
                     f"{med('debounce'):.1f} | {med('ingest'):.1f} | {med('update'):.1f} | {med('model'):.1f} | "
                     f"{med('lock_wait'):.1f} | {med('compute'):.1f} |")
    lines.append(f"\n{history_info} Other work shared the 2 cores (the lead's training experiment, another helper). "
                 f"Machine: {machine_facts('onnxruntime')}.\n")
    publish(lines, append=not args.no_append)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
