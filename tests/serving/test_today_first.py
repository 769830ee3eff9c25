"""Today first: after a promotion the newest days are written first and the history follows in
chunks; a daily run waiting for the lock gets in between two history chunks; runs queue on the lock."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

from serving.history import recompute_history
from serving.predictor import Predictor
from serving.product import ProductStore
from serving.update import UpdateLockedError, newest_first, product_lock, run_update
from tests.conftest import SMALL_WORLD
from tests.serving.test_update import harmonise
from tests.standins import export_small_model

LAST = pd.Timestamp(SMALL_WORLD["end"])
DAYS = pd.date_range("2021-06-09", LAST)         # every day with ERA5-Land in the small world


class RecordingProduct(ProductStore):
    """The product, remembering the order of its writes (day, model version, thread)."""

    writes: list

    def write_day(self, day, et_mm, *, model_version, **kw):
        action = super().write_day(day, et_mm, model_version=model_version, **kw)
        self.writes.append((pd.Timestamp(day), model_version, threading.current_thread().name))
        return action


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return export_small_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def promoted(small_settings, small_world, model_file):
    """A product computed by v1, and v2 just promoted: every day is stale."""
    settings = small_settings.model_copy(update={
        "static": small_settings.static.model_copy(update={"elevation_file": small_world / "static" / "elevation.nc"}),
        "serving": small_settings.serving.model_copy(update={"quicklooks": False}),
        "update": small_settings.update.model_copy(update={"history_chunk_days": 5, "lock_poll_s": 0.05})})
    harmonise(settings, small_world, ("era5land", "modis"))
    product = RecordingProduct(settings)
    product.writes = []
    run_update(settings, predictor=Predictor(settings, model_path=model_file, model_version=1), product=product)
    product.writes.clear()
    return settings, product, Predictor(settings, model_path=model_file, model_version=2)


def test_newest_first_order():
    days = list(pd.date_range("2021-01-01", periods=12))
    order = newest_first(days, 5)
    assert order == days[11:] + days[6:11] + days[1:6] + days[0:1]     # the newest day alone, then chunks
    assert newest_first(days[::-1], 100) == days[11:] + days[:11]
    assert newest_first(days[:1], 5) == days[:1] and newest_first([], 5) == []


def test_promotion_newest_days_first_then_history(promoted):
    settings, product, v2 = promoted
    daily = run_update(settings, predictor=v2, product=product, newest=True, max_days=3)
    assert list(daily.written) == [f"{d:%Y-%m-%d}" for d in [DAYS[-1], DAYS[-3], DAYS[-2]]]   # the newest days, now,
    #                                                                           the newest one first
    assert daily.deferred == list(DAYS[:-3]) and "left to the history recompute" in daily.summary()
    seen = []
    history = recompute_history(settings, predictor=v2, product=product,
                                progress=lambda done, total, a, b: seen.append((done, total, a, b)))
    order = [d for d, _, _ in product.writes]
    assert order[0] == DAYS[-1] and sorted(order[:3]) == list(DAYS[-3:])        # today first ...
    assert sorted(order[3:]) == list(DAYS[:-3]) and len(order) == len(DAYS)     # ... the history follows, each day once
    chunks = [pd.Timestamp(b) for _, _, _, b in seen]
    assert chunks == sorted(chunks, reverse=True)                               # newest chunk first
    assert history.chunks == len(seen) == -(-len(DAYS[:-3]) // 5)
    assert seen[-1][0] == seen[-1][1] == len(DAYS) - 3                          # progress reaches 100 %
    assert {r.model_version for r in product.records()} == {2}
    assert history.years_rebuilt == [2021]
    again = recompute_history(settings, predictor=v2, product=product)          # resumable: nothing left
    assert again.chunks == 0 and again.written == {}


def test_daily_run_gets_in_between_history_chunks(promoted):
    settings, product, v2 = promoted
    started = threading.Event()
    result: dict = {}

    def history():
        result["history"] = recompute_history(settings, predictor=v2, product=product, end=LAST - pd.Timedelta(days=1),
                                              progress=lambda *a: started.set())

    worker = threading.Thread(target=history, name="history")
    worker.start()
    assert started.wait(120)                                  # the history is under way (one chunk done)
    before = len(product.writes)
    t0 = time.perf_counter()
    daily = run_update(settings, predictor=v2, product=product, newest=True, max_days=1)
    waited = time.perf_counter() - t0
    worker.join(300)
    assert list(daily.written) == [f"{LAST:%Y-%m-%d}"]
    writes = product.writes
    today_at = next(k for k, (d, _, name) in enumerate(writes) if d == LAST and name == "MainThread")
    history_writes_meanwhile = sum(1 for d, _, name in writes[before:today_at] if name == "history")
    assert history_writes_meanwhile <= settings.update.history_chunk_days     # waited at most one chunk
    assert today_at < len(writes) - 1                          # the history was still going on after it
    assert len(result["history"].written) == len(DAYS) - 1
    assert {r.model_version for r in product.records()} == {2}
    print(f"daily run waited {waited:.2f} s for the lock; {history_writes_meanwhile} history day(s) in between")



def test_history_gives_way_inside_a_chunk(promoted):
    """With one chunk holding the whole history, a daily run still waits at most about one history
    day: the history stops after the day it is computing, and the next chunk picks up the rest."""
    settings, product, v2 = promoted
    settings = settings.model_copy(update={"update": settings.update.model_copy(update={"history_chunk_days": 100})})
    result: dict = {}

    first = threading.Event()                                  # the history's first write: its chunk is under way
    original = product.write_day

    def write_day(day, et_mm, **kw):
        action = original(day, et_mm, **kw)
        if threading.current_thread().name == "history":
            first.set()
        return action

    product.write_day = write_day

    def history():
        result["history"] = recompute_history(settings, predictor=v2, product=product, end=LAST - pd.Timedelta(days=1))

    worker = threading.Thread(target=history, name="history")
    worker.start()
    assert first.wait(120)
    before = len(product.writes)
    daily = run_update(settings, predictor=v2, product=product, newest=True, max_days=1)
    worker.join(300)
    assert list(daily.written) == [f"{LAST:%Y-%m-%d}"]
    writes = product.writes
    today_at = next(k for k, (d, _, name) in enumerate(writes) if d == LAST and name == "MainThread")
    meanwhile = sum(1 for d, _, name in writes[before:today_at] if name == "history")
    assert meanwhile <= 2                                      # the day in progress (and one racing the marker)
    history = result["history"]
    assert history.chunks >= 2                                 # the chunk was cut short, then resumed
    assert sorted(history.written) == [f"{d:%Y-%m-%d}" for d in DAYS[:-1]]   # and every history day written once
    assert {r.model_version for r in product.records()} == {2}

def test_two_runs_queue_instead_of_failing(promoted):
    settings, product, v2 = promoted
    errors, reports = [], []

    def run():
        try:
            reports.append(run_update(settings, predictor=v2, product=product, newest=True))
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, name=f"run{k}") for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    assert sorted(len(r.written) for r in reports) == [0, len(DAYS)]           # the second found nothing stale
    assert len(product.writes) == len(DAYS)

    with product_lock(settings):                               # a run that waits too long still fails, clearly
        with pytest.raises(UpdateLockedError, match="did not end within 0.2 s"):
            with product_lock(settings, wait_s=0.2):
                pass
