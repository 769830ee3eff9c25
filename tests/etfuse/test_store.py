"""Harmonised store: idempotent by day, revisions recorded, extensions merged, lazy reads."""

import dask.array
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from etfuse.errors import StoreError
from etfuse.store import HarmonisedStore


def grid_ds(days=("2021-03-01", "2021-03-02"), value=1.0, variables=("et",), res=0.1, has=None) -> xr.Dataset:
    lat = np.arange(37.0, 36.45, -res)
    lon = np.arange(100.0, 100.55, res)
    data = {}
    for k, v in enumerate(variables):
        arr = np.full((len(days), lat.size, lon.size), value + k, dtype=np.float32)
        arr[:, 0, 0] = np.nan                           # a sea cell
        data[v] = (("time", "lat", "lon"), arr)
    ds = xr.Dataset(data, coords={"time": pd.DatetimeIndex(days), "lat": lat, "lon": lon,
                                  "era5_stream": ("time", ["final"] * len(days))})
    for v, flags in (has or {}).items():
        ds = ds.assign_coords({f"has_{v}": ("time", flags)})
    return ds


def station_ds(values=(1.0, 2.0), day="2021-03-01", lat=36.7) -> xr.Dataset:
    n = len(values)
    return xr.Dataset({"et": ("obs", np.array(values, np.float32)), "elevation_m": ("obs", np.full(n, 2295.0)),
                       "qc_large": ("obs", np.zeros(n, np.int8))},
                      coords={"station_id": ("obs", [f"5286{i}" for i in range(n)]),
                              "time": ("obs", pd.DatetimeIndex([day] * n)),
                              "lat": ("obs", np.full(n, lat)), "lon": ("obs", np.full(n, 101.75))})


def test_same_day_twice_stores_once(tmp_path):
    store = HarmonisedStore(tmp_path)
    first = store.put_grid("gleam", grid_ds(), file_name="a.nc", file_sha256="aa")
    assert [c.action for c in first] == ["new", "new"]
    path = store.day_path("gleam", "2021-03-01")
    mtime = path.stat().st_mtime_ns
    again = store.put_grid("gleam", grid_ds(), file_name="a-copy.nc", file_sha256="bb")
    assert [c.action for c in again] == ["unchanged", "unchanged"]
    assert path.stat().st_mtime_ns == mtime                      # not rewritten
    assert store.grid_days("gleam") == [pd.Timestamp("2021-03-01"), pd.Timestamp("2021-03-02")]
    assert store.revisions().empty


def test_changed_day_is_a_revision_and_the_old_version_is_kept(tmp_path):
    store = HarmonisedStore(tmp_path)
    store.put_grid("era5land", grid_ds(days=("2021-03-01",), value=1.0), file_name="era5t.nc", file_sha256="t")
    changes = store.put_grid("era5land", grid_ds(days=("2021-03-01",), value=1.5), file_name="final.nc",
                             file_sha256="f")
    assert changes[0].action == "revised" and changes[0].changed == ["et"]
    day = store.read_grid_day("era5land", "2021-03-01")
    assert float(day["et"].values[0, 1, 1]) == 1.5 and day["et"].attrs["source_file"] == "final.nc"
    kept = list((tmp_path / "grids" / "era5land" / "revisions").glob("*.r0.nc"))
    assert len(kept) == 1
    with xr.open_dataset(kept[0]) as old:
        assert float(old["et"].values[0, 1, 1]) == 1.0
    rev = store.revisions("era5land")
    assert rev[["day", "item", "revision", "file_name", "file_sha256"]].values.tolist() == [
        ["2021-03-01", "et", 1, "final.nc", "f"]]


def test_new_variables_extend_a_day_and_incomplete_ones_are_not_stored(tmp_path):
    store = HarmonisedStore(tmp_path)
    # the first file has only the day's accumulations: skt present as a variable but flagged incomplete
    first = grid_ds(days=("2021-01-31",), variables=("et", "skt"), has={"et": [True], "skt": [False]})
    assert store.put_grid("era5land", first)[0].variables == ["et"]
    assert "skt" not in store.read_grid_day("era5land", "2021-01-31").data_vars
    second = grid_ds(days=("2021-01-31",), variables=("et", "skt"), value=9.0, has={"et": [False], "skt": [True]})
    change = store.put_grid("era5land", second)[0]
    assert change.action == "extended" and change.changed == ["skt"]
    day = store.read_grid_day("era5land", "2021-01-31")
    assert float(day["et"].values[0, 1, 1]) == 1.0 and float(day["skt"].values[0, 1, 1]) == 10.0
    assert day["skt"].attrs["era5_stream"] == "final"


def test_a_different_grid_must_replace_everything(tmp_path):
    store = HarmonisedStore(tmp_path)
    store.put_grid("era5land", grid_ds(days=("2021-03-01",), variables=("et", "skt")))
    with pytest.raises(StoreError, match="grid changed"):
        store.put_grid("era5land", grid_ds(days=("2021-03-01",), variables=("et",), res=0.05))
    change = store.put_grid("era5land", grid_ds(days=("2021-03-01",), variables=("et", "skt"), res=0.05))[0]
    assert change.action == "revised"
    assert store.read_grid_day("era5land", "2021-03-01").sizes["lat"] == 11


def test_open_grid_is_lazy_and_fills_missing_variables(tmp_path):
    store = HarmonisedStore(tmp_path)
    store.put_grid("era5land", grid_ds(days=("2021-03-01",), variables=("et",)))
    store.put_grid("era5land", grid_ds(days=("2021-03-02", "2021-03-03"), variables=("et", "skt")))
    ds = store.open_grid("era5land", "2021-03-01", "2021-03-03")
    assert isinstance(ds["et"].data, dask.array.Array)
    assert ds.sizes["time"] == 3 and np.isnan(ds["skt"].values[0]).all() and ds["skt"].values[1, 1, 1] == 2.0
    assert store.open_grid("era5land", "2021-03-02", None).sizes["time"] == 2
    with pytest.raises(StoreError, match="no stored days"):
        store.open_grid("gleam")
    with pytest.raises(StoreError, match=r"variables \['lst'\] are not stored"):
        store.open_grid("era5land", variables=["lst"])


def test_writes_leave_no_temporary_files(tmp_path):
    store = HarmonisedStore(tmp_path)
    store.put_grid("gleam", grid_ds())
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_stations_idempotent_with_revisions_and_history(tmp_path):
    store = HarmonisedStore(tmp_path)
    c1 = store.put_stations("cma", station_ds((1.0, np.nan)), file_name="m1.TXT", file_sha256="1")
    assert [(c.action, sorted(c.changed)) for c in c1] == [("new", ["52860", "52861"])]
    assert store.put_stations("cma", station_ds((1.0, np.nan)))[0].action == "unchanged"
    c3 = store.put_stations("cma", station_ds((1.2, 3.0)), file_name="m1-fixed.TXT", file_sha256="2")
    assert c3[0].action == "revised" and sorted(c3[0].changed) == ["52860", "52861"]
    frame = store.read_stations("cma")
    assert frame["et_mm"].round(3).tolist() == [1.2, 3.0] and frame["revision"].tolist() == [1, 1]
    assert frame.columns.tolist()[:7] == ["source", "station_id", "date", "lat", "lon", "elevation_m", "et_mm"]
    with store._db() as db:
        history = db.execute("SELECT station_id, et_mm, file_name FROM station_obs_history ORDER BY station_id").fetchall()
    assert history[0][:2] == ("52860", 1.0) and history[0][2] == "m1.TXT" and history[1][1] is None
    # a station that moved is a revision of its row, and the move is kept in history
    moved = store.put_stations("cma", station_ds((1.2, 3.0), lat=36.9))
    assert moved[0].action == "revised"


def test_read_stations_filters_and_missing(tmp_path):
    store = HarmonisedStore(tmp_path)
    store.put_stations("cma", station_ds((1.0, np.nan), day="2021-03-01"))
    store.put_stations("cma", station_ds((2.0, 2.5), day="2021-03-05"))
    store.put_stations("stations", station_ds((0.5,), day="2021-03-05"))
    assert len(store.read_stations("cma")) == 3
    assert len(store.read_stations("cma", with_missing=True)) == 4
    assert len(store.read_stations(["cma", "stations"], start="2021-03-02")) == 3
    assert len(store.read_stations(end="2021-03-01")) == 1


def test_summary(tmp_path):
    store = HarmonisedStore(tmp_path)
    store.put_grid("gleam", grid_ds())
    store.put_stations("cma", station_ds((1.0, np.nan)))
    s = store.summary().set_index("source")
    assert s.loc["gleam", "days"] == 2 and s.loc["gleam", "kind"] == "grid"
    assert s.loc["cma", "stations"] == 2 and s.loc["cma", "observations"] == 1


def test_a_day_file_missing_from_the_ledger_is_recovered(tmp_path):
    """A writer killed after the day file's rename and before its ledger rows: the next put of the
    same data finds the file unchanged and adds the rows update's fingerprints need."""
    import sqlite3
    store = HarmonisedStore(tmp_path)
    store.put_grid("gleam", grid_ds())
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        db.execute("DELETE FROM grid_versions WHERE day='2021-03-02'")
    assert [c.action for c in store.put_grid("gleam", grid_ds())] == ["unchanged", "unchanged"]
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        rows = db.execute("SELECT day, variable, revision, action FROM grid_versions ORDER BY day").fetchall()
    assert rows == [("2021-03-01", "et", 0, "new"), ("2021-03-02", "et", 0, "recovered")]
    assert [c.action for c in store.put_grid("gleam", grid_ds())] == ["unchanged", "unchanged"]
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM grid_versions").fetchone()[0] == 2


def test_latest_grid_versions_gives_the_newest_revision_of_each_day_in_the_window(tmp_path):
    store = HarmonisedStore(tmp_path)
    store.put_grid("era5land", grid_ds(days=("2021-03-01", "2021-03-02"), value=1.0), file_name="a.nc",
                   file_sha256="a")
    store.put_grid("era5land", grid_ds(days=("2021-03-02",), value=2.0), file_name="b.nc", file_sha256="b")
    store.put_grid("gleam", grid_ds(days=("2021-03-03",)), file_name="g.nc", file_sha256="g")
    got = store.latest_grid_versions(pd.Timestamp("2021-03-02"), pd.Timestamp("2021-03-03"))
    assert sorted(got) == [("era5land", "2021-03-02"), ("gleam", "2021-03-03")]   # 03-01 is outside the window
    full = store.latest_grid_versions(pd.Timestamp("2021-03-01"), pd.Timestamp("2021-03-03"))
    assert full[("era5land", "2021-03-01")]["et"][0] != got[("era5land", "2021-03-02")]["et"][0]  # 1.0 vs 2.0
    assert got[("era5land", "2021-03-02")]["et"][1] == "final"                 # the stream of the revision
    revised = store.put_grid("era5land", grid_ds(days=("2021-03-02",), value=1.0), file_name="c.nc",
                             file_sha256="c")
    assert revised[0].action == "revised"
    again = store.latest_grid_versions(pd.Timestamp("2021-03-02"), pd.Timestamp("2021-03-02"))
    assert again[("era5land", "2021-03-02")]["et"][0] == full[("era5land", "2021-03-01")]["et"][0]
