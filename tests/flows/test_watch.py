"""A landing file triggers a run; a burst of files makes one run; partial and hidden files do not count."""

from __future__ import annotations

import threading
import time

import pytest

from flows.watch import counts_as_delivery, watch_landing


@pytest.fixture
def watched(settings):
    s = settings.model_copy(update={"watch": settings.watch.model_copy(update={"quiet_s": 0.6, "max_wait_s": 5.0})})
    landing = s.folder("landing")
    (landing / "era5land").mkdir(parents=True)
    (landing / "modis").mkdir(parents=True)
    calls: list[tuple[float, list]] = []
    stop = threading.Event()
    state = {"pending": False}

    def trigger(files):
        calls.append((time.monotonic(), sorted(p.name for p in files)))
        return len(calls)

    thread = threading.Thread(target=watch_landing, args=(s, trigger),
                              kwargs={"pending": lambda run: state["pending"], "stop": stop}, daemon=True)
    thread.start()
    time.sleep(0.5)                                      # the watcher is up
    yield s, landing, calls, state
    stop.set()
    thread.join(10)


def _wait(calls, n, timeout=15.0):
    deadline = time.monotonic() + timeout
    while len(calls) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(calls) >= n


def test_a_landing_file_triggers_one_run(watched):
    s, landing, calls, _ = watched
    t0 = time.monotonic()
    (landing / "era5land" / "era5land_2024_05.nc").write_bytes(b"x" * 100)
    assert _wait(calls, 1)
    assert calls[0][1] == ["era5land_2024_05.nc"]
    assert calls[0][0] - t0 < 5.0                        # within seconds
    time.sleep(1.5)
    assert len(calls) == 1


def test_a_burst_of_files_makes_one_run(watched):
    s, landing, calls, _ = watched
    for k in range(30):                                   # a month of files, copied one after another
        (landing / "modis" / f"MOD11A1.A2024{k + 100:03d}.h25v05.061.hdf").write_bytes(b"x" * 10)
        time.sleep(0.05)
    (landing / "modis" / ".MOD11A1.tmp").write_bytes(b"x")            # rsync temporary: not a delivery
    (landing / "modis" / "MOD11A1.A2024200.h25v05.061.hdf.part").write_bytes(b"x")
    (landing / "stray.nc").write_bytes(b"x")                           # directly in landing/: ingest skips it
    assert _wait(calls, 1)
    time.sleep(2.0)
    assert len(calls) == 1 and len(calls[0][1]) == 30


def test_a_run_not_yet_started_takes_later_files(watched):
    s, landing, calls, state = watched
    (landing / "modis" / "a.hdf").write_bytes(b"x")
    assert _wait(calls, 1)
    state["pending"] = True                               # the started run is still queued
    (landing / "modis" / "b.hdf").write_bytes(b"x")
    time.sleep(2.0)
    assert len(calls) == 1
    state["pending"] = False                              # it runs now: the next delivery starts another
    (landing / "modis" / "c.hdf").write_bytes(b"x")
    assert _wait(calls, 2) and calls[1][1] == ["c.hdf"]


def test_counts_as_delivery(settings, tmp_path):
    landing = settings.folder("landing")
    assert counts_as_delivery(landing / "cma" / "SURF_CLI_CHN.txt", settings)
    assert not counts_as_delivery(landing / "cma" / ".hidden", settings)
    assert not counts_as_delivery(landing / "x.nc", settings)
    assert not counts_as_delivery(tmp_path / "cma" / "x.nc", settings)


@pytest.fixture
def watched_quiet_2s(settings):
    """A watcher with a 2 s quiet period and a 4 s longest wait."""
    s = settings.model_copy(update={"watch": settings.watch.model_copy(update={"quiet_s": 2.0, "max_wait_s": 4.0})})
    landing = s.folder("landing")
    (landing / "modis").mkdir(parents=True)
    calls: list[tuple[float, list]] = []
    stop = threading.Event()
    thread = threading.Thread(target=watch_landing, args=(s, lambda files: calls.append((time.monotonic(), files))),
                              kwargs={"stop": stop}, daemon=True)
    thread.start()
    time.sleep(0.5)
    yield landing, calls
    stop.set()
    thread.join(10)
    assert not thread.is_alive()                          # the stop is seen within a tick


def test_a_delivery_starts_its_run_one_quiet_period_after_its_last_file(watched_quiet_2s):
    """Not up to two: watchfiles' ``step`` as the quiet period started the run 3.5 s after a file
    landing 0.5 s after the watcher started, for a 2 s quiet period."""
    landing, calls = watched_quiet_2s
    (landing / "modis" / "a.hdf").write_bytes(b"x")
    t0 = time.monotonic()
    assert _wait(calls, 1, timeout=10)
    assert 2.0 <= calls[0][0] - t0 < 3.0


def test_files_landing_without_pause_wait_at_most_max_wait(watched_quiet_2s):
    landing, calls = watched_quiet_2s
    t0 = time.monotonic()
    for k in range(26):                                   # a file every 0.25 s for 6.5 s: never 2 s quiet
        (landing / "modis" / f"f{k:02d}.hdf").write_bytes(b"x")
        time.sleep(0.25)
    assert _wait(calls, 2, timeout=10)
    assert 4.0 <= calls[0][0] - t0 < 5.5                  # the burst was 4 s old (seen up to 3 ticks late)
    names = [p.name for _, files in calls for p in files]
    assert sorted(names) == [f"f{k:02d}.hdf" for k in range(26)]    # every file in exactly one run


def test_files_in_a_new_source_folder_count(watched):
    """A first delivery of a source creates ``landing/<source>/`` and writes into it at once, before
    inotify watches the new folder: its files are listed when the burst settles."""
    s, landing, calls, _ = watched
    folder = landing / "gleam"
    folder.mkdir()
    (folder / "E_2021_GLEAM_v3.7a.nc").write_bytes(b"x" * 100)
    (folder / ".E_2022.tmp").write_bytes(b"x")                # not a delivery, even listed
    assert _wait(calls, 1)
    time.sleep(1.0)
    assert [c[1] for c in calls] == [["E_2021_GLEAM_v3.7a.nc"]]
