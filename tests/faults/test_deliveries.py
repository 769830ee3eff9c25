"""Faults in when and how often providers deliver: duplicates, out-of-order months and days, ERA5T
replaced by final, ERA5T arriving after final, GLEAM a year late, missing days in the middle of a
model window (docs/reliability.md, faults F08-F13).

The product side runs the real update (serving/update.py) with a small exported model over the
small world; a product day must always say what its inputs were (provisional / final) and be
recomputed exactly when they change.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.alerts import read_alert_log
from etfuse.ingest import ingest_all
from etfuse.store import HarmonisedStore
from serving.predictor import Predictor
from serving.product import ProductStore
from serving.update import run_update
from tests.faults.kit import (TODAY, assert_nothing_lost, deliver, deliver_world, deliveries, landing_snapshot,
                              make_home, store_state, stored_files_state)


def era5_hourly(world: Path, month: int) -> xr.Dataset:
    from etfuse.sources.era5land import hourly
    path = sorted((world / "landing" / "era5land").glob("*.nc"))[month]
    h = hourly(path).rename({"lat": "latitude", "lon": "longitude"})
    codes = np.where(h["expver_stream"].values == "ERA5T", "0005", "0001").astype(object)
    return h.assign_coords(expver=("valid_time", codes)).drop_vars("expver_stream")


def write_era5(path: Path, h: xr.Dataset) -> Path:
    from etfuse.synth.writers_grids import write_era5land_cds_netcdf
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_era5land_cds_netcdf(path, h, zipped=True)


def update(settings, model_file: Path, **kwargs):
    return run_update(settings, predictor=Predictor(settings, model_path=model_file, model_version=1),
                      product=ProductStore(settings), **kwargs)


def statuses(settings) -> dict[str, str]:
    return {f"{r.day:%Y-%m-%d}": r.status for r in ProductStore(settings, reconcile=False).records()}


def days(first: str, last: str) -> list[str]:
    return [f"{d:%Y-%m-%d}" for d in pd.date_range(first, last)]


# ----------------------------------------------------------------------------- F08 duplicates
def test_duplicate_deliveries(home, small_world, record_property):
    """F08: the same bytes delivered again under the same name, under another name and twice in one
    run: each is a ``duplicate``, archived beside the first copy (or dropped when the very same
    name and bytes are archived), and the store does not change (not one day file rewritten)."""
    settings = home.settings
    deliver_world(settings, small_world, sources=("era5land", "gleam", "cma"))
    first = ingest_all(settings, today=TODAY)
    assert first.counts() == {"accepted": 5}
    state = store_state(settings)
    mtimes = sorted(p.stat().st_mtime_ns for p in settings.harmonised.rglob("*.nc"))
    before = landing_snapshot(settings)
    deliver_world(settings, small_world, sources=("era5land", "gleam", "cma"))       # everything again
    gleam = next((small_world / "landing" / "gleam").glob("*"))
    deliver(settings, "gleam", "E_2021_GLEAM_v3.7a (1).nc", gleam)                    # a browser's copy name
    deliver(settings, "gleam", "E_2021_GLEAM_v3.7a_resent.nc", gleam)
    before.update(landing_snapshot(settings))
    again = ingest_all(settings, today=TODAY)
    assert again.counts() == {"duplicate": 7}
    assert store_state(settings) == state
    assert sorted(p.stat().st_mtime_ns for p in settings.harmonised.rglob("*.nc")) == mtimes
    archived = sorted(p.name for p in settings.folder("archive").rglob("*GLEAM*"))
    assert len(archived) == 3                                    # one per distinct name, same bytes
    statuses_ = {(r["file_name"], r["status"]) for r in deliveries(settings)}
    assert ("E_2021_GLEAM_v3.7a_resent.nc", "duplicate") in statuses_
    assert ("E_2021_GLEAM_v3.7a.nc", "duplicate") in statuses_
    assert not [p for p in settings.folder("landing").rglob("*") if p.is_file()]
    assert_nothing_lost(settings, before, record_property)
    record_property("fault", "F08")
    record_property("bad_inputs", 7)


# ----------------------------------------------------------------------------- F09 out of order
def test_out_of_order_deliveries_end_like_in_order(tmp_path, small_world, record_property, monkeypatch):
    """F09: July before June (the day that straddles the months waits for its 00 UTC step and is
    completed when June arrives), MODIS days newest first, CMA months reversed: the store ends
    exactly as after in-order deliveries (same content hash and stream of every stored variable)."""
    for key in [k for k in __import__("os").environ if k.startswith("ETFUSE_") and k != "ETFUSE_REALDATA"]:
        monkeypatch.delenv(key)
    land = small_world / "landing"
    era = sorted((land / "era5land").glob("*"))
    modis = sorted((land / "modis").glob("*"))[:4]
    cma = sorted((land / "cma").glob("*"))
    in_order = make_home(tmp_path / "in_order", small_world).settings
    for path in era + modis + cma:
        deliver(in_order, path.parent.name, path.name, path)
    ingest_all(in_order, today=TODAY)
    reverse = make_home(tmp_path / "reverse", small_world).settings
    before = {}
    for path in reversed(era + modis + cma):                     # one run per file: truly one after the other
        deliver(reverse, path.parent.name, path.name, path)
        before.update(landing_snapshot(reverse))
        report = ingest_all(reverse, today=TODAY)
        assert [o.status for o in report.outcomes] == ["accepted"], [(o.file, o.status, o.reason) for o in report.outcomes]
    assert store_state(reverse) == store_state(in_order)
    assert stored_files_state(reverse) == stored_files_state(in_order)
    assert_nothing_lost(reverse, before, record_property)
    record_property("fault", "F09")
    record_property("bad_inputs", len(era) + len(modis) + len(cma))


# ----------------------------------------------------------------------------- F10-F12 revisions and late data
def test_late_gleam_then_final_era5_then_a_late_era5t(store_home, small_world, model_file, record_property):
    """F10: GLEAM arrives a year late (ingest's clock a year on): accepted; every product day whose
    window it completes is recomputed and becomes final where the rest is final.
    F11: final ERA5-Land replaces ERA5T: a revision (alert, old days kept), and exactly the product
    days whose window holds a revised day are recomputed, now final.
    F12: an ERA5T file delivered after the final one: nothing stored (final is kept), the delivery
    recorded as ``superseded`` with a warning alert, nothing marked for reprocessing, the product
    untouched."""
    settings = store_home.settings
    store = HarmonisedStore(settings.harmonised)
    start, end = "2021-07-06", "2021-07-19"
    first = update(settings, model_file, start=start, end=end)
    assert set(first.written.values()) == {"written"} and set(statuses(settings).values()) == {"provisional"}

    # F10: GLEAM for 2021 arrives in August 2022
    gleam = next((small_world / "landing" / "gleam").glob("*"))
    deliver(settings, "gleam", gleam.name, gleam)
    before = landing_snapshot(settings)
    late = ingest_all(settings, today=date(2022, 8, 1))
    assert late.counts() == {"accepted": 1} and late.outcomes[0].changes == {"new": 40}
    second = update(settings, model_file, start=start, end=end)
    assert sorted(second.written) == days(start, end) and set(second.written.values()) == {"replaced"}
    era5t = [d for d in days("2021-06-09", end)
             if store.read_grid_day("era5land", d)["et"].attrs.get("era5_stream") == "ERA5T"]
    assert era5t == days("2021-07-15", end)                      # the world's last five days are ERA5T
    s = statuses(settings)
    assert {s[d] for d in days(start, "2021-07-14")} == {"final"}
    assert {s[d] for d in days("2021-07-15", end)} == {"provisional"}

    # F11: final ERA5-Land replaces ERA5T
    h = era5_hourly(small_world, 1)
    final_h = h.assign_coords(expver=("valid_time", np.full(h.sizes["valid_time"], "0001", dtype=object)))
    preliminary = final_h.valid_time > np.datetime64("2021-07-15T00:00")     # the ERA5T steps
    final_h["e"] = xr.where(preliminary, final_h["e"] * 1.02, final_h["e"])  # final differs a little
    final = write_era5(store_home.root / "tmp" / "era5land_202107.nc", final_h.where(
        final_h.valid_time >= np.datetime64("2021-07-14T01:00"), drop=True))
    deliver(settings, "era5land", final.name, final)
    before.update(landing_snapshot(settings))
    revision = ingest_all(settings, today=TODAY).outcomes[0]
    assert revision.status == "accepted" and revision.changes["revised"] == 5, revision.changes
    assert "info:revision" in revision.alerts
    assert sorted(store.pending_reprocess()["day"]) == days("2021-07-15", end)
    third = update(settings, model_file, start=start, end=end)
    assert sorted(third.written) == days("2021-07-15", end)      # window 3: exactly the revised days' windows
    assert set(statuses(settings).values()) == {"final"}, statuses(settings)
    assert store.pending_reprocess().empty
    kept = list((settings.harmonised / "grids" / "era5land" / "revisions").glob("*.nc"))
    assert len(kept) == 5

    # F12: the old ERA5T file for July arrives again after the final one
    late_era5t = sorted((small_world / "landing" / "era5land").glob("*"))[1]
    deliver(settings, "era5land", "era5land_202107_resent.nc", late_era5t)
    before.update(landing_snapshot(settings))
    state, files_state = store_state(settings), stored_files_state(settings)
    product_before = {r.day: (r.fingerprint, r.file_sha256) for r in ProductStore(settings).records()}
    o = ingest_all(settings, today=TODAY).outcomes[0]
    assert o.status == "superseded" and o.changes.get("superseded") == 5, (o.status, o.changes)
    assert "warning:superseded" in o.alerts
    assert store_state(settings) == state and stored_files_state(settings) == files_state
    assert store.pending_reprocess().empty
    record = [r for r in deliveries(settings) if r["file_name"] == "era5land_202107_resent.nc"][0]
    assert record["status"] == "superseded" and json.loads(record["detail"])["superseded_days"] == days("2021-07-15", end)
    assert Path(record["kept_as"]).is_file()                     # archived, not dropped
    alert = [a for a in read_alert_log(settings) if a.get("kind") == "superseded"][-1]
    assert alert["severity"] == "warning" and alert["days"] == days("2021-07-15", end)
    fourth = update(settings, model_file, start=start, end=end)
    assert fourth.written == {}
    assert {r.day: (r.fingerprint, r.file_sha256) for r in ProductStore(settings).records()} == product_before
    assert_nothing_lost(settings, before, record_property)
    record_property("fault", "F10,F11,F12")
    record_property("bad_inputs", 3)


# ----------------------------------------------------------------------------- F13 a gap in the middle of a window
def test_missing_days_in_the_middle_of_a_window(home, small_world, model_file, record_property):
    """F13: ERA5-Land for 20-22 June never arrived: those product days are not computed (ERA5-Land ET
    is the one input every day needs), the days whose window holds the gap are computed from what
    there is (finite, non-negative, provisional), and when the missing days arrive exactly the
    gap's days and the days whose windows held it are computed (again)."""
    settings = home.settings
    h = era5_hourly(small_world, 0)
    t = pd.DatetimeIndex(h.valid_time.values)
    gap = (t > pd.Timestamp("2021-06-20 00:00")) & (t <= pd.Timestamp("2021-06-23 00:00"))
    gappy = write_era5(home.root / "tmp" / "era5land_202106.nc", h.isel(valid_time=~gap))
    deliver(settings, "era5land", "era5land_202106_partial.nc", gappy)
    before = landing_snapshot(settings)
    first = ingest_all(settings, today=TODAY)
    assert set(first.counts()) == {"accepted"}
    out = update(settings, model_file, start="2021-06-15", end="2021-06-28")
    written = sorted(out.written)
    assert written == days("2021-06-15", "2021-06-19") + days("2021-06-23", "2021-06-28")
    product = ProductStore(settings)
    for d in ("2021-06-23", "2021-06-24"):
        field = product.read_field(d)
        assert np.isfinite(field).all() and (field >= 0).all() and product.record(d).status == "provisional"
    full = sorted((small_world / "landing" / "era5land").glob("*"))[0]
    deliver(settings, "era5land", full.name, full)
    before.update(landing_snapshot(settings))
    filled = ingest_all(settings, today=TODAY).outcomes[0]
    # 20-22 June are new; 23 June gains its skin temperature (its 00 UTC hour was in the gap)
    assert filled.status == "accepted" and filled.changes.get("new") == 3, filled.changes
    assert filled.changes.get("extended") == 1, filled.changes
    again = update(settings, model_file, start="2021-06-15", end="2021-06-28")
    assert sorted(again.written) == days("2021-06-20", "2021-06-25")      # the gap and the windows over it
    assert again.written["2021-06-23"] == "replaced" and again.written["2021-06-20"] == "written"
    assert_nothing_lost(settings, before, record_property)
    record_property("fault", "F13")
    record_property("bad_inputs", 1)


# ----------------------------------------------------------------------------- F11b final identical to ERA5T
def _confirm_era5t_unchanged(settings, small_world, tmp: Path):
    """Deliver the July file again with every step labelled final and the very same values."""
    h = era5_hourly(small_world, 1)
    final = h.assign_coords(expver=("valid_time", np.full(h.sizes["valid_time"], "0001", dtype=object)))
    path = write_era5(tmp / "era5land_202107_final.nc", final)
    deliver(settings, "era5land", path.name, path)
    return ingest_all(settings, today=TODAY).outcomes[0]


def test_era5t_confirmed_unchanged_by_final_era5(store_home, small_world, record_property):
    """F11b: final ERA5-Land usually repeats ERA5T's values exactly.  The days are then
    ``finalised``: same content hash, a new ledger version whose stream is final, the day file's
    ``era5_stream`` rewritten, the days marked for reprocessing (so the product can say final)."""
    settings = store_home.settings
    store = HarmonisedStore(settings.harmonised)
    before = landing_snapshot(settings)
    o = _confirm_era5t_unchanged(settings, small_world, store_home.root / "tmp")
    assert o.status == "accepted" and o.changes.get("finalised") == 5, o.changes
    for d in days("2021-07-15", "2021-07-19"):
        assert store.read_grid_day("era5land", d)["et"].attrs["era5_stream"] == "final"
    streams = {(k[2], k[3]): v[1] for k, v in store_state(settings).items() if k[1] == "era5land"}
    assert {streams[(d, "et")] for d in days("2021-07-15", "2021-07-19")} == {"final"}
    assert sorted(store.pending_reprocess()["day"]) == days("2021-07-15", "2021-07-19")
    assert not list((settings.harmonised / "grids" / "era5land" / "revisions").glob("*.nc"))   # no new content
    assert_nothing_lost(settings, {**before, **{f"era5land/{Path(o.file).name}": o.sha256}}, record_property)
    record_property("fault", "F11b")
    record_property("bad_inputs", 1)


def test_product_days_become_final_when_era5t_is_confirmed_unchanged(store_home, small_world, model_file):
    settings = store_home.settings
    gleam = next((small_world / "landing" / "gleam").glob("*"))
    deliver(settings, "gleam", gleam.name, gleam)
    ingest_all(settings, today=TODAY)
    update(settings, model_file, start="2021-07-15", end="2021-07-19")
    assert set(statuses(settings).values()) == {"provisional"}
    _confirm_era5t_unchanged(settings, small_world, store_home.root / "tmp")
    update(settings, model_file, start="2021-07-15", end="2021-07-19")
    assert set(statuses(settings).values()) == {"final"}
