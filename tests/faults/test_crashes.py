"""Faults of the machine: the disk fills while the product or the store is written, and SIGKILL
during ingest, update and train (docs/reliability.md, faults F14-F19).

A crash test runs the step as operations does, in its own process (the ``etfuse`` CLI or the same
calls in a short script), kills it with SIGKILL at a point where it is writing, runs it again, and
compares the end state with an uninterrupted run of the same work.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from etfuse.ingest import ingest_all, quarantined
from etfuse.store import HarmonisedStore
from serving.predictor import Predictor
from serving.product import ProductStore
from serving.update import run_update
from tests.faults.kit import (TODAY, assert_nothing_lost, cli_cmd, copy_home, count_rows, deliver, deliver_world,
                              deliveries, kept_files, kill_when, landing_snapshot, make_home, python_cmd, run, sha,
                              start, store_state, stored_files_state, temp_leftovers)

UPDATE_SCRIPT = """
import sys
from etfuse.settings import load_settings
from serving.predictor import Predictor
from serving.product import ProductStore
from serving.update import run_update
s = load_settings()
report = run_update(s, predictor=Predictor(s, model_path=sys.argv[1], model_version=int(sys.argv[2])),
                    product=ProductStore(s))
print(report.summary(), flush=True)
"""


def update(settings, model_file: Path, version: int = 1, **kwargs):
    return run_update(settings, predictor=Predictor(settings, model_path=model_file, model_version=version),
                      product=ProductStore(settings), **kwargs)


def product_state(settings) -> dict:
    """Every product day: its provenance and its values (NaN-aware), read from the day files."""
    product = ProductStore(settings)
    out = {}
    for r in product.records():
        field = product.read_field(r.day)
        out[f"{r.day:%Y-%m-%d}"] = (r.fingerprint, r.model_version, r.status, tuple(sorted(r.sources_used)),
                                    np.nan_to_num(field, nan=-1.0).round(5).tobytes())
    return out


def ledger_matches_files(settings) -> None:
    """Each product ledger row names a readable file whose SHA-256 it records; reconcile finds nothing."""
    product = ProductStore(settings, reconcile=False)
    for r in product.records():
        assert r.path.is_file() and sha(r.path) == r.file_sha256, r.day
    report = ProductStore(settings).last_reconcile
    assert not (report.added or report.updated or report.removed or report.corrupt or report.problems), report


# ----------------------------------------------------------------------------- F14 disk full, product (simulated)
def test_disk_full_while_writing_the_product(store_home, model_file, monkeypatch, record_property):
    """F14: the writer fails with ENOSPC halfway through a day file (a failing netCDF writer that has
    already put bytes on disk).  The update stops with the error; the day's previous file is intact
    and readable, the ledger still agrees with the files, no temporary file is left; once the disk
    has room, the next update writes every day."""
    import serving.product as product_module
    settings = store_home.settings
    update(settings, model_file, 1, start="2021-07-10", end="2021-07-14")
    before = {r.day: (r.file_sha256, r.model_version) for r in ProductStore(settings).records()}
    real_writer = product_module.write_product_file
    calls = {"n": 0}

    def failing_writer(path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 3:                            # the first two days fit, the third does not
            with open(path, "wb") as handle:
                handle.write(b"\x89HDF\r\n\x1a\n" + b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_writer(path, *args, **kwargs)

    monkeypatch.setattr(product_module, "write_product_file", failing_writer)
    with pytest.raises(OSError) as err:
        update(settings, model_file, 2, start="2021-07-10", end="2021-07-14")   # a new model: every day again
    assert err.value.errno == errno.ENOSPC
    product = ProductStore(settings, reconcile=False)
    after = {r.day: (r.file_sha256, r.model_version) for r in product.records()}
    assert [after[d][1] for d in sorted(after)] == [2, 2, 1, 1, 1]           # two replaced, three untouched
    for day, (digest, version) in after.items():
        assert sha(product.day_path(day)) == digest and np.isfinite(product.read_field(day)).any()
    assert not temp_leftovers(settings.folder("product"))
    ledger_matches_files(settings)
    monkeypatch.setattr(product_module, "write_product_file", real_writer)
    again = update(settings, model_file, 2, start="2021-07-10", end="2021-07-14")
    assert sorted(again.written) == [f"2021-07-{d}" for d in (12, 13, 14)]
    assert {r.model_version for r in ProductStore(settings).records()} == {2}
    assert before.keys() == after.keys()
    record_property("fault", "F14")
    record_property("bad_inputs", 1)
    record_property("files_lost", 0)


# ----------------------------------------------------------------------------- F15 disk full, product (real)
@contextlib.contextmanager
def small_filesystem(folder: Path, size: str):
    """A tmpfs of ``size`` mounted on ``folder`` (root only); skips the test where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    """Fill the filesystem of ``folder`` until only about ``leave`` bytes are free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    filler = folder / "filler.bin"
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


def test_disk_full_on_a_real_small_filesystem(store_home, model_file, record_property):
    """F15: the product folder on a 2 MB tmpfs filled to its last few kB: the update fails on a
    real ENOSPC (from HDF5 or SQLite), every day written before stays intact, nothing half-written
    is left under a product name; after space is freed, one more update completes the product
    exactly as an uninterrupted run would."""
    settings = store_home.settings
    reference = copy_home(store_home.root, store_home.root.parent / "reference", store_home.world).settings
    update(reference, model_file, 1, start="2021-07-01", end="2021-07-19")
    with small_filesystem(settings.folder("product"), "2m") as folder:
        update(settings, model_file, 1, start="2021-07-01", end="2021-07-05")
        written = {r.day: r.file_sha256 for r in ProductStore(settings).records()}
        filler = fill(folder, 24 * 1024)
        with pytest.raises((OSError, RuntimeError, sqlite3.Error)):     # HDF5, SQLite or the OS says so
            update(settings, model_file, 1, start="2021-07-01", end="2021-07-19")
        for day, digest in written.items():                    # what was there is intact
            assert sha(folder / "daily" / "2021" / f"etfuse_et_{day:%Y-%m-%d}.nc") == digest
        filler.unlink()
        again = update(settings, model_file, 1, start="2021-07-01", end="2021-07-19")
        assert again.written
        assert product_state(settings) == product_state(reference)
        ledger_matches_files(settings)
        assert not temp_leftovers(folder)
    record_property("fault", "F15")
    record_property("bad_inputs", 1)
    record_property("files_lost", 0)


# ----------------------------------------------------------------------------- F16 disk full, store and quarantine
def test_disk_full_while_ingesting(home, small_world, monkeypatch, record_property):
    """F16: ENOSPC while a harmonised day file is written, and while a quarantine reason is written:
    the run stops with the error, the file that was being handled stays in landing (not quarantined
    for a fault of the machine, not lost), nothing half-written is left; the next run, with room
    again, ends exactly as a run that never failed."""
    from etfuse.store import HarmonisedStore as Store
    settings = home.settings
    era = sorted((small_world / "landing" / "era5land").glob("*"))
    for path in era:
        deliver(settings, "era5land", path.name, path)
    deliver(settings, "gleam", "E_2021_GLEAM_v3.7a.nc", b"")               # a bad file to quarantine
    before = landing_snapshot(settings)
    real_write = Store._write_atomic
    calls = {"n": 0}

    def failing_write(ds, path):
        calls["n"] += 1
        if calls["n"] == 25:                                   # in the second file, after some of its days
            tmp = path.with_name(f".{path.name}.x.{os.getpid()}.tmp")
            tmp.write_bytes(b"\0" * 100)
            tmp.unlink()
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(ds, path)

    monkeypatch.setattr(Store, "_write_atomic", staticmethod(failing_write))
    with pytest.raises(OSError):
        ingest_all(settings, today=TODAY)
    left = landing_snapshot(settings)
    assert "era5land/" + era[1].name in left and not quarantined(settings)
    monkeypatch.setattr(Store, "_write_atomic", staticmethod(real_write))

    real_write_text = Path.write_text

    def full_disk_text(self, *args, **kwargs):
        if ".reason.json" in self.name:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk_text)
    with pytest.raises(OSError):                               # ERA5-Land July is accepted, then GLEAM fails
        ingest_all(settings, today=TODAY)
    assert list(landing_snapshot(settings)) == ["gleam/E_2021_GLEAM_v3.7a.nc"] and not quarantined(settings)
    monkeypatch.setattr(Path, "write_text", real_write_text)
    report = ingest_all(settings, today=TODAY)
    assert report.counts() == {"quarantined": 1}, report.counts()
    assert [q["file"] for q in quarantined(settings)] == ["E_2021_GLEAM_v3.7a.nc"]
    assert not temp_leftovers(settings.harmonised)
    reference = make_home(home.root.parent / "reference", small_world).settings
    for path in era:
        deliver(reference, "era5land", path.name, path)
    ingest_all(reference, today=TODAY)
    assert store_state(settings) == store_state(reference)
    assert stored_files_state(settings) == stored_files_state(reference)
    assert_nothing_lost(settings, before, record_property)
    record_property("fault", "F16")
    record_property("bad_inputs", 2)


# ----------------------------------------------------------------------------- F17 SIGKILL during ingest
@pytest.mark.slow
def test_sigkill_during_ingest(home, small_world, tmp_path, record_property):
    """F17: ``etfuse ingest --direct`` killed (SIGKILL) while it writes the store, then again after
    a few files, then run to the end: the store, the archive and the ledger's outcome per file equal
    those of an uninterrupted run; no landing file is lost; no temporary file survives."""
    settings = home.settings
    deliver_world(settings, small_world, sources=("era5land", "gleam", "modis", "cma", "stations"), modis_days=3)
    deliver(settings, "gleam", "E_2020_GLEAM_v3.7a.nc", b"not a netcdf file")
    before = landing_snapshot(settings)
    reference = make_home(tmp_path / "reference", small_world).settings
    for name in before:
        source, file = name.split("/")
        deliver(reference, source, file, settings.folder("landing") / name)
    ingest_all(reference)
    db = settings.harmonised / "ledger.sqlite"
    log = tmp_path / "ingest.log"
    grids = settings.harmonised / "grids"
    killed = [
        kill_when(start(cli_cmd("ingest", "--direct"), home, log),
                  lambda: any(grids.glob("era5land/*/.*.tmp")) or len(list(grids.glob("era5land/*/*.nc"))) >= 3),
        kill_when(start(cli_cmd("ingest", "--direct"), home, log),
                  lambda: count_rows(db, "SELECT COUNT(*) FROM deliveries") >= 4),
    ]
    assert any(killed), "the ingest finished before it could be killed"
    assert run(cli_cmd("ingest", "--direct"), home, log) == 0, log.read_text()[-3000:]
    assert not [p for p in settings.folder("landing").rglob("*") if p.is_file()]
    HarmonisedStore(settings.harmonised)                           # opening the store removes dead writers' files
    assert not temp_leftovers(settings.harmonised) and not temp_leftovers(settings.folder("archive"))
    assert store_state(settings) == store_state(reference)
    assert stored_files_state(settings) == stored_files_state(reference)
    status = {r["file_name"]: r["status"] for r in deliveries(settings)}
    assert status == {r["file_name"]: r["status"] for r in deliveries(reference)}
    assert set(kept_files(settings)) == set(kept_files(reference))
    assert_nothing_lost(settings, before, record_property)
    record_property("fault", "F17")
    record_property("bad_inputs", 2)


# ----------------------------------------------------------------------------- F18 SIGKILL during update
@pytest.mark.slow
def test_sigkill_during_update(store_home, model_file, tmp_path, record_property):
    """F18: an update killed (SIGKILL) after a few product days, and again while it builds the
    yearly file, then run to the end: every day, its provenance and its values equal an
    uninterrupted update's; the ledger agrees with the files; no temporary file survives; the
    product lock is free again."""
    settings = store_home.settings
    reference = copy_home(store_home.root, tmp_path / "reference", store_home.world).settings
    update(reference, model_file, 1)
    db = settings.folder("product") / "ledger.sqlite"
    log = tmp_path / "update.log"
    cmd = python_cmd(UPDATE_SCRIPT) + [str(model_file), "1"]
    first = kill_when(start(cmd, store_home, log), lambda: count_rows(db, "SELECT COUNT(*) FROM days") >= 5)
    product_root = settings.folder("product")
    second = kill_when(start(cmd, store_home, log), lambda: any(product_root.glob(".etfuse_et_2021.nc.*.tmp")),
                       timeout=120, poll=0.01)
    assert first, "the update finished before it could be killed"
    assert run(cmd, store_home, log) == 0, log.read_text()[-3000:]
    ledger_matches_files(settings)
    assert product_state(settings) == product_state(reference)
    product = ProductStore(settings)
    # whatever state the yearly file was left in, a point read gives the current days
    expected = ProductStore(reference).read_point(36.5, 101.5)
    got = product.read_point(36.5, 101.5)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))
    assert not temp_leftovers(product_root)
    from serving.update import product_lock
    with product_lock(settings):                                   # no lock was left behind
        pass
    record_property("fault", "F18")
    record_property("bad_inputs", 1 + int(second))
    record_property("files_lost", 0)


def test_yearly_file_is_rebuilt_after_a_crash_during_its_build(store_home, model_file):
    """F18: the crash came after every day was written and before the yearly file was renamed
    into place (here: the yearly file is simply not there); the next update must build it."""
    settings = store_home.settings
    update(settings, model_file, 1, start="2021-07-10", end="2021-07-14")
    ProductStore(settings).year_path(2021).unlink()
    update(settings, model_file, 1, start="2021-07-10", end="2021-07-14")
    assert ProductStore(settings).stale_years() == []


# ----------------------------------------------------------------------------- F19 SIGKILL during train
@pytest.mark.slow
def test_sigkill_during_train(store_home, tmp_path, record_property):
    """F19: ``etfuse train`` (tiny settings) killed (SIGKILL) while it logs and registers, then run
    again: the rerun registers a new version and gates it; every alias points at a version that
    exists; a version the killed run left registered carries no gate decision and is not the
    champion; the champion (if any) is served from a complete download."""
    from training.registry import ModelRegistry
    home = copy_home(store_home.root, tmp_path / "train-home", store_home.world,
                     training={"epochs": 1, "hidden": 4, "heldout_station_fraction": 0.3})
    settings = home.settings
    log = tmp_path / "train.log"
    killed = kill_when(start(cli_cmd("train"), home, log), lambda: "ONNX export" in log.read_text(), timeout=300)
    assert killed, log.read_text()[-2000:]
    assert run(cli_cmd("train"), home, log, timeout=400) == 0, log.read_text()[-3000:]
    registry = ModelRegistry(settings)
    versions = registry.versions()
    assert versions, "the rerun registered nothing"
    newest = max(versions, key=lambda v: v.version)
    assert newest.gate_decision in ("promoted", "rejected")
    for info in versions:
        if info.version != newest.version:                         # left by the killed run, if it got that far
            assert info.gate_decision is None and "champion" not in info.aliases
    for alias in ("champion", "challenger"):
        v = registry.alias_version(alias)
        assert v is None or v in {i.version for i in versions}
    if registry.champion() is not None:
        path, version = registry.onnx_model_path("champion")
        assert Predictor(settings, registry=registry).model().version == version
    assert not list(settings.folder("cache").rglob("*.partial"))
    record_property("fault", "F19")
    record_property("bad_inputs", 1)
    record_property("files_lost", 0)
