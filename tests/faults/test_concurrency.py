"""Faults of timing: two ``daily`` runs at once over the same home, two ingests racing for the same
landing files, readers while the product is rewritten (docs/reliability.md, faults F24-F26)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from etfuse.ingest import IngestContext, LandingFile, discover, ingest_all, ingest_file
from serving.predictor import Predictor
from serving.product import ProductStore
from serving.update import run_update
from tests.faults.kit import (TODAY, assert_nothing_lost, deliver_world, deliveries, landing_snapshot, make_home,
                              python_cmd, start, store_state, stored_files_state, temp_leftovers)

#: what ``etfuse daily --direct`` does, with the model from a file instead of the registry
DAILY_SCRIPT = """
import sys
from etfuse.ingest import ingest_all
from etfuse.settings import load_settings
from serving.predictor import Predictor
from serving.product import ProductStore
from serving.update import UpdateLockedError, run_update
s = load_settings()
print("ingest", ingest_all(s).counts(), flush=True)
try:
    report = run_update(s, predictor=Predictor(s, model_path=sys.argv[1], model_version=1), product=ProductStore(s))
except UpdateLockedError as exc:
    print("locked:", exc, flush=True)
    sys.exit(75)
print("update", report.summary(), flush=True)
"""


def product_state(settings) -> dict:
    product = ProductStore(settings)
    return {f"{r.day:%Y-%m-%d}": (r.fingerprint, r.model_version, r.status,
                                  np.nan_to_num(product.read_field(r.day), nan=-1).round(5).tobytes())
            for r in product.records()}


# ----------------------------------------------------------------------------- F24 + F25 two daily runs at once
@pytest.mark.slow
def test_two_daily_runs_at_once(home, small_world, model_file, tmp_path, record_property):
    """F24/F25: two ``daily`` processes start together on the same home.  Ingest is serialised by
    the ingest lock (the second waits, then finds nothing left or skips what the first took): every
    landing file is handled exactly once, none is moved twice, none lost.  The update is guarded by
    the product lock: the second either finds nothing stale or stops with UpdateLockedError (exit
    75 here) without writing.  The end state equals one daily run."""
    settings = home.settings
    deliver_world(settings, small_world, sources=("era5land", "gleam", "cma", "stations", "modis"), modis_days=3)
    before = landing_snapshot(settings)
    reference = make_home(tmp_path / "reference", small_world).settings
    deliver_world(reference, small_world, sources=("era5land", "gleam", "cma", "stations", "modis"), modis_days=3)
    ingest_all(reference)
    run_update(reference, predictor=Predictor(reference, model_path=model_file, model_version=1),
               product=ProductStore(reference))
    logs = [tmp_path / "daily-1.log", tmp_path / "daily-2.log"]
    procs = [start(python_cmd(DAILY_SCRIPT) + [str(model_file)], home, log) for log in logs]
    codes = [p.wait(timeout=400) for p in procs]
    texts = [log.read_text() for log in logs]
    assert sorted(codes) in ([0, 0], [0, 75]), (codes, [t[-2000:] for t in texts])
    assert "Traceback" not in "".join(texts), texts
    assert "another ingest is running" in "".join(texts), "the two runs did not overlap"
    records = deliveries(settings)
    names = [r["file_name"] for r in records]
    assert sorted(names) == sorted(n.split("/")[1] for n in before)             # each file handled once
    assert {r["status"] for r in records} == {"accepted"}
    assert not [p for p in settings.folder("landing").rglob("*") if p.is_file()]
    assert store_state(settings) == store_state(reference)
    assert stored_files_state(settings) == stored_files_state(reference)
    assert product_state(settings) == product_state(reference)
    report = ProductStore(settings).last_reconcile
    assert report.clean and not temp_leftovers(settings.folder("product"))
    assert_nothing_lost(settings, before, record_property)
    record_property("fault", "F24,F25")
    record_property("bad_inputs", 2)


# ----------------------------------------------------------------------------- F24b racing for one file
def test_two_ingests_racing_for_the_same_files(home, small_world, record_property):
    """F24b: two ingest runs of one process (threads) over the same landing zone, and a run whose
    discovered file was taken by another run before its turn: every file is accepted once, the
    other run reports it ``skipped`` (never an error from moving a file that is gone), nothing is
    lost."""
    settings = home.settings
    deliver_world(settings, small_world, sources=("era5land", "gleam", "cma"))
    before = landing_snapshot(settings)
    # a run that discovered the files, then lost them to another run
    ctx = IngestContext.create(settings, today=TODAY)
    stale, _ = discover(settings)
    results: list = []
    errors: list = []

    def run_ingest():
        try:
            results.append(ingest_all(settings, today=TODAY))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run_ingest) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    counts = [r.counts() for r in results]
    assert sorted(map(str, counts)) == sorted(map(str, [{"accepted": 5}, {}])), counts
    late = [ingest_file(lf, ctx) for lf in stale]
    assert {o.status for o in late} == {"skipped"} and all(o.reason["stage"] == "claim" for o in late)
    assert len(deliveries(settings)) == 5
    gone = ingest_file(LandingFile("gleam", settings.folder("landing") / "gleam" / "never-there.nc"), ctx)
    assert gone.status == "skipped"
    assert_nothing_lost(settings, before, record_property)
    record_property("fault", "F24b")
    record_property("bad_inputs", len(stale) + 1)


# ----------------------------------------------------------------------------- F26 readers during a rewrite
#: an API process's reads, in a loop until told to stop: whole fields, areas and point series
READER_SCRIPT = """
import json, sys, time
from pathlib import Path
import numpy as np, pandas as pd
from etfuse.settings import load_settings
from serving.product import ProductStore
store = ProductStore(load_settings(), reconcile=False)
days = pd.date_range("2021-07-01", "2021-07-10")
first = {d: store.read_field(d) for d in days}
print("ready", flush=True)
stop, problems, reads, versions = Path(sys.argv[1]), [], 0, set()
while not stop.exists():
    try:
        for d in days:
            if not np.array_equal(store.read_field(d), first[d], equal_nan=True):
                problems.append(f"{d:%F}: not the whole day")
            store.read_area((101.2, 36.2, 101.6, 36.6), d)
            reads += 1
        frame = store.read_point(36.5, 101.5, "2021-07-01", "2021-07-10")
        versions |= set(map(int, frame["model_version"]))
        if len(frame) != 10:
            problems.append(f"a point series of {len(frame)} days")
    except Exception as exc:
        problems.append(repr(exc))
print(json.dumps({"reads": reads, "problems": problems[:10], "versions": sorted(versions)}), flush=True)
"""


def test_readers_never_see_a_half_written_day(store_home, model_file, tmp_path, record_property):
    """F26: an API-style reader process (whole fields, areas, point series in a loop) runs while an
    update rewrites every day (a new model version: every file and the yearly file are replaced):
    every read returns a whole day (the same values: the same network under a new version number),
    never an error, a short series or a half-written file; afterwards every day is of the new
    version."""
    import json
    import time

    from tests.faults.kit import start
    settings = store_home.settings
    first = Predictor(settings, model_path=model_file, model_version=1)
    run_update(settings, predictor=first, product=ProductStore(settings), start="2021-07-01", end="2021-07-10")
    log, stop = tmp_path / "reader.log", tmp_path / "stop"
    reader = start(python_cmd(READER_SCRIPT) + [str(stop)], store_home, log)
    deadline = time.monotonic() + 120
    while "ready" not in log.read_text():
        assert reader.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.1)
    second = Predictor(settings, model_path=model_file, model_version=2)
    report = run_update(settings, predictor=second, product=ProductStore(settings), start="2021-07-01",
                        end="2021-07-10")
    stop.touch()
    assert reader.wait(timeout=120) == 0, log.read_text()[-3000:]
    result = json.loads(log.read_text().strip().splitlines()[-1])
    assert result["problems"] == [] and result["reads"] > 0, result
    assert set(report.written.values()) == {"replaced"}
    assert {r.model_version for r in ProductStore(settings).records()} == {2}
    record_property("fault", "F26")
    record_property("bad_inputs", 0)
    record_property("files_lost", 0)
