"""Faults in what providers deliver: corrupt, truncated, empty, ZIP-wrapped and mislabelled files of
every source, wrong units, wrong grid or region, clock skew on future dates, a station that moves.

Each test fills landing/ with the faulty files (beside good ones where it matters), runs ingest as
operations does (``ingest_all``), and asserts what became of every file, what the store holds and
that nothing was lost (docs/reliability.md, faults F01-F08).
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from datetime import date, timedelta
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import xarray as xr

from etfuse.ingest import ingest_all, quarantined, release
from etfuse.store import HarmonisedStore
from tests.faults.kit import (TODAY, assert_nothing_lost, deliver, deliver_world, deliveries, landing_snapshot, sha,
                              store_state, stored_files_state)


def by_name(report) -> dict:
    return {f"{o.source}/{o.file}": o for o in report.outcomes}


def why(outcome) -> str:
    reason = outcome.reason or {}
    failed = [x["check"] for x in reason.get("outcomes", []) if not x.get("success", True)]
    return f"{reason.get('stage')}: {reason.get('error') or ', '.join(failed)}"


def zipped(*members: tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def gleam_field(world: Path) -> xr.DataArray:
    """The world's GLEAM ET as ``(time, lat, lon)`` with NaN for fill."""
    path = next((world / "landing" / "gleam").glob("*.nc"))
    with xr.open_dataset(path) as ds:
        e = ds["E"].load().transpose("time", "lat", "lon")
    return e.where(e > -998)


def write_gleam(tmp: Path, name: str, da: xr.DataArray, **kwargs) -> Path:
    from etfuse.synth.writers_grids import write_gleam_year
    tmp.mkdir(parents=True, exist_ok=True)
    return write_gleam_year(tmp / name, da, **kwargs)


def era5_hourly(world: Path, month: int) -> xr.Dataset:
    """An ERA5-Land file of the world as hourly data in the provider's layout, ready to be written again."""
    from etfuse.sources.era5land import hourly
    path = sorted((world / "landing" / "era5land").glob("*.nc"))[month]
    h = hourly(path).rename({"lat": "latitude", "lon": "longitude"})
    codes = np.where(h["expver_stream"].values == "ERA5T", "0005", "0001").astype(object)
    return h.assign_coords(expver=("valid_time", codes)).drop_vars("expver_stream")


def write_era5(tmp: Path, name: str, h: xr.Dataset) -> Path:
    from etfuse.synth.writers_grids import write_era5land_cds_netcdf
    tmp.mkdir(parents=True, exist_ok=True)
    return write_era5land_cds_netcdf(tmp / name, h, zipped=True)


def fluxnet_file(tmp: Path, version: str) -> Path:
    from etfuse.synth.writers_stations import fluxnet_daily_file_name, write_fluxnet_daily
    tmp.mkdir(parents=True, exist_ok=True)
    days = pd.date_range("2021-06-10", "2021-07-19")
    return write_fluxnet_daily(tmp / fluxnet_daily_file_name("CN-HaM", 2021, 2021, version=version),
                               pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "LE_F_MDS": 80.0, "TA_F": 8.0}))


# ----------------------------------------------------------------------------- F01 corrupt / truncated / empty
def test_corrupt_truncated_and_empty_files_of_every_source(home, small_world, record_property):
    """F01: every source gets an empty file, a truncated one (cut mid-record), one with a corrupt
    header, one with 64 random bytes in the middle and one of pure noise, each under a name the
    reader accepts.  Each is quarantined with the reader's reason -- or, where the corrupt bytes
    changed nothing that is read (padding inside an HDF5 file), stored with exactly the content of
    the clean file, which the clean file then confirms (all its days ``unchanged``)."""
    settings = home.settings
    land = small_world / "landing"
    clean = {"era5land": sorted((land / "era5land").glob("*"))[0], "gleam": next((land / "gleam").glob("*")),
             "modis": sorted((land / "modis").glob("*"))[0], "cma": sorted((land / "cma").glob("*"))[0],
             "stations": next((land / "stations").glob("*"))}
    rng = np.random.default_rng(7)
    bad: dict[str, str] = {}
    variants = ("empty", "truncated", "corrupt_header", "corrupt_middle", "noise")

    def spoil(data: bytes, how: str, text: bool) -> bytes:
        if how == "empty":
            return b""
        if how == "truncated":                      # mid-record: a text file loses part of a line
            cut = len(data) // 3
            if text:
                cut = data.index(b"\n", cut) - 30
            return data[:cut]
        noise = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        if how == "corrupt_header":
            return noise + data[64:]
        if how == "corrupt_middle":
            i = len(data) // 2
            return data[:i] + noise + data[i + 64:]
        return rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()

    for source, path in clean.items():
        text = source in ("cma", "stations")
        for k, how in enumerate(variants):
            # names the reader accepts (CMA and MODIS names carry the period; GLEAM the year)
            name = {"cma": f"SURF_CLI_CHN_MUL_DAY-EVP-13240-20{10 + k:02d}06.TXT",
                    "modis": f"MOD11A1.A2021{161 + 0:03d}.{how}.061.tif",
                    "gleam": f"E_2021_GLEAM_{how}.nc"}.get(source, f"{how}_{path.name}")
            deliver(settings, source, name, spoil(path.read_bytes(), how, text))
            bad[f"{source}/{name}"] = how
    for k, how in enumerate(variants):               # FLUXNET: the site and years come from the name
        path = fluxnet_file(home.root / "tmp", f"1-{k}")
        deliver(settings, "fluxnet", path.name, spoil(path.read_bytes(), how, True))
        bad[f"fluxnet/{path.name}"] = how
    for source, path in clean.items():               # the clean files come after their spoiled copies
        deliver(settings, source, f"zz_{path.name}" if source in ("era5land", "stations") else path.name, path)
    before = landing_snapshot(settings)
    report = ingest_all(settings, today=TODAY)
    outcomes = by_name(report)
    assert set(outcomes) == set(before)
    harmless = []
    for name, how in bad.items():
        o = outcomes[name]
        if o.status == "accepted":
            harmless.append(name)
            assert how == "corrupt_middle" and name.split("/")[0] in ("era5land", "gleam", "modis"), (name, how)
        else:
            assert o.status == "quarantined" and o.reason["stage"] in ("read", "validation"), (name, how, o.status)
            assert o.alerts and o.alerts[0].startswith("critical:"), (name, o.alerts)
    for name, o in outcomes.items():
        if name not in bad:
            assert o.status == "accepted", (name, why(o))
            if any(h.split("/")[0] == o.source for h in harmless):
                # the clean file finds exactly what the harmless corrupt copy stored
                assert set(o.changes) <= {"unchanged", "extended", "new"} and "revised" not in o.changes, o.changes
    # at most the unread padding of one HDF5/ZIP file may be hit; the rest are refused
    assert len(harmless) <= 3
    assert {q["file"] for q in quarantined(settings)} == {n.split("/")[1] for n in bad if n not in harmless}
    assert_nothing_lost(settings, before, record_property)
    record_property("fault", "F01")
    record_property("bad_inputs", len(bad))


# ----------------------------------------------------------------------------- F02 ZIP-wrapped, F03 mislabelled
def test_zip_wrapped_and_mislabelled_files(home, small_world, record_property):
    """F02/F03: ZIPs where a plain file is expected (and a ZIP of a ZIP, and a CDS ZIP with nothing
    usable), and files of one provider dropped into another's folder or named as another format:
    every one is refused by the reader with a reason; a nested ZIP of valid ERA5-Land data is read."""
    settings = home.settings
    land = small_world / "landing"
    era, gleam = sorted((land / "era5land").glob("*"))[0], next((land / "gleam").glob("*"))
    modis, cma = sorted((land / "modis").glob("*"))[0], sorted((land / "cma").glob("*"))[0]
    stations = next((land / "stations").glob("*"))
    bad = {
        "gleam/E_2019_GLEAM_v3.7a.nc": zipped(("E_2019_GLEAM_v3.7a.nc", gleam.read_bytes())),
        "cma/SURF_CLI_CHN_MUL_DAY-EVP-13240-202105.TXT": zipped(("evp.TXT", cma.read_bytes())),
        "stations/station_et_zipped.csv": zipped(("x.csv", stations.read_bytes())),
        "modis/MOD11A1.A2021100.etfuse.061.tif": zipped(("x.tif", modis.read_bytes())),
        "era5land/era5land_202108.nc": zipped(("README.txt", b"the CDS job failed")),
        "era5land/era5land_202109.nc": zipped(),
        "era5land/era5land_gz.nc": b"\x1f\x8b\x08\x00" + os.urandom(500),
        "era5land/E_2018_GLEAM_v3.7a.nc": gleam.read_bytes(),
        "gleam/E_2017_GLEAM_v3.7a.nc": era.read_bytes(),
        "gleam/E_2016_GLEAM_v3.7a.nc": modis.read_bytes(),
        "stations/cma_as_stations.csv": cma.read_bytes(),
        "cma/SURF_CLI_CHN_MUL_DAY-EVP-13240-202104.TXT": stations.read_bytes(),
        "cma/SURF_CLI_CHN_MUL_DAY-EVP-13240-202103.TXT": gleam.read_bytes(),
        "modis/MOD11A1.A2021101.etfuse.061.tif": gleam.read_bytes(),
        "stations/error_page.csv": b"<html><body>502 Bad Gateway</body></html>\n",
        "gleam/E_2015_GLEAM_v3.7a.nc": b"<html><body>404 Not Found</body></html>\n",
    }
    for name, data in bad.items():
        deliver(settings, *name.split("/"), data)
    deliver(settings, "era5land", "era5land_nested_zip.nc", zipped(("inner.nc", era.read_bytes())))
    before = landing_snapshot(settings)
    outcomes = by_name(ingest_all(settings, today=TODAY))
    for name in bad:
        o = outcomes[name]
        assert o.status == "quarantined" and o.reason["stage"] == "read", (name, o.status, why(o))
    assert outcomes["era5land/era5land_nested_zip.nc"].status == "accepted"
    assert "ZIP member 'README.txt'" in outcomes["era5land/era5land_202108.nc"].reason["error"]
    assert "ZIP archive is empty" in outcomes["era5land/era5land_202109.nc"].reason["error"]
    assert_nothing_lost(settings, before, record_property)
    record_property("fault", "F02,F03")
    record_property("bad_inputs", len(bad))


# ----------------------------------------------------------------------------- F04 wrong units
def test_wrong_units(home, small_world, record_property):
    """F04: units attributes that do not match (refused by the reader) and numbers in the wrong unit
    under the right label (ET in metres, radiation in MJ labelled J, skin temperature in deg C,
    station ET in metres): refused by validation; none reaches the store."""
    settings = home.settings
    tmp = home.root / "tmp"
    land = small_world / "landing"
    gleam = next((land / "gleam").glob("*"))
    bad = {}

    def gleam_variant(name, edit):
        path = tmp / name
        tmp.mkdir(exist_ok=True)
        path.write_bytes(gleam.read_bytes())
        with netCDF4.Dataset(path, "a") as nc:
            edit(nc["E"])
        deliver(settings, "gleam", name, path)
        bad[f"gleam/{name}"] = "read" if "attr" in name else "validation"

    gleam_variant("E_2021_GLEAM_attr.nc", lambda v: setattr(v, "units", "m/day"))
    gleam_variant("E_2021_GLEAM_attr2.nc", lambda v: setattr(v, "units", "W m-2"))
    gleam_variant("E_2021_GLEAM_metres.nc", lambda v: v.__setitem__(slice(None), v[:] / 1000.0))
    h = era5_hourly(small_world, 0)

    def era(name, ds, stage):
        deliver(settings, "era5land", name, write_era5(tmp, name, ds))
        bad[f"era5land/{name}"] = stage

    from etfuse.synth import writers_grids
    orig = dict(writers_grids.ERA5LAND_ATTRS["e"])
    try:
        writers_grids.ERA5LAND_ATTRS["e"]["units"] = "mm"      # the provider labels metres as mm
        era("era5land_e_units.nc", h, "read")
    finally:
        writers_grids.ERA5LAND_ATTRS["e"].clear()
        writers_grids.ERA5LAND_ATTRS["e"].update(orig)
    mj = h.copy()
    mj["ssr"], mj["str"] = h["ssr"] / 1e6, h["str"] / 1e6
    era("era5land_radiation_mj.nc", mj, "validation")
    celsius = h.copy()
    celsius["skt"] = h["skt"] - 273.15
    era("era5land_skt_celsius.nc", celsius, "validation")
    table = (land / "stations").glob("*.csv").__next__().read_text().splitlines()
    rows = [table[0]] + [",".join([*r.split(",")[:2], f"{float(r.split(',')[2]) / 1000:.6f}", *r.split(",")[3:]])
                         for r in table[1:]]
    deliver(settings, "stations", "station_et_metres.csv", ("\n".join(rows) + "\n").encode())
    bad["stations/station_et_metres.csv"] = "validation"
    before = landing_snapshot(settings)
    outcomes = by_name(ingest_all(settings, today=TODAY))
    for name, stage in bad.items():
        o = outcomes[name]
        assert o.status == "quarantined" and o.reason["stage"] == stage, (name, o.status, why(o))
    checks = {n: why(outcomes[n]) for n in bad}
    assert "et_units_look_metres" in checks["gleam/E_2021_GLEAM_metres.nc"]
    assert "net_radiation_units_look_wrong" in checks["era5land/era5land_radiation_mj.nc"]
    assert "skt_units_look_celsius" in checks["era5land/era5land_skt_celsius.nc"]
    assert "et_units_look_metres" in checks["stations/station_et_metres.csv"]
    assert store_state(settings) == {}                      # nothing reached the store
    assert_nothing_lost(settings, before, record_property)
    record_property("fault", "F04")
    record_property("bad_inputs", len(bad))


# ----------------------------------------------------------------------------- F05 wrong grid or region
def test_wrong_grid_or_region(home, small_world, record_property):
    """F05: files for another region (refused: no overlap), a file that covers half the region
    (accepted as a revision with a coverage warning; the old days kept under revisions/), GLEAM in
    the v4 layout with latitude ascending (read by names: the same content, days unchanged), GLEAM
    on another grid (a revision), coordinates out of order or repeated (refused), and ERA5-Land with
    only some variables on another grid (refused at the store; the store is untouched even when the
    first days of the file would have fitted)."""
    settings = home.settings
    tmp = home.root / "tmp"
    deliver_world(settings, small_world, sources=("era5land", "gleam"))
    assert ingest_all(settings, today=TODAY).counts() == {"accepted": 3}
    store = HarmonisedStore(settings.harmonised)
    e = gleam_field(small_world)
    v4 = write_gleam(tmp, "E_2021_GLEAM_v4.2a.nc", e.sortby("lat"), dim_order=("time", "lat", "lon"))
    deliver(settings, "gleam", v4.name, v4)
    same = by_name(ingest_all(settings, today=TODAY))[f"gleam/{v4.name}"]
    assert same.status == "accepted" and same.changes == {"unchanged": 40}, same.changes

    bad = {}
    far = write_gleam(tmp, "E_2021_GLEAM_far.nc", e.assign_coords(lon=e.lon.values - 80))
    bad[f"gleam/{far.name}"] = ("quarantined", "read", "does not overlap the region")
    shuffled = write_gleam(tmp, "E_2021_GLEAM_shuffled.nc", e.isel(lon=[0, 2, 1, 3, 4, 5, 6, 7]))
    bad[f"gleam/{shuffled.name}"] = ("quarantined", "validation", "schema_axis_order")
    repeated = write_gleam(tmp, "E_2021_GLEAM_repeated.nc",
                           e.assign_coords(lat=np.r_[e.lat.values[:4], e.lat.values[3:7]]))
    bad[f"gleam/{repeated.name}"] = ("quarantined", "validation", "schema_axis_order")
    h = era5_hourly(small_world, 1)
    era_far = write_era5(tmp, "era5land_202107_far.nc", h.assign_coords(longitude=h.longitude.values + 30))
    bad[f"era5land/{era_far.name}"] = ("quarantined", "read", "does not overlap the region")
    # ERA5-Land: only ET and radiation on a coarser grid, starting 9 days before the stored data:
    # the first days are new (they would fit), the later ones clash with stored days on the old grid
    later = h.isel(latitude=slice(None, None, 2), longitude=slice(None, None, 2)).drop_vars("skt")
    later = later.assign_coords(valid_time=later.valid_time.values - np.timedelta64(30, "D"))
    coarse = write_era5(tmp, "era5land_202107_coarse.nc", later)
    bad[f"era5land/{coarse.name}"] = ("quarantined", "store", "the grid changed")
    for name in bad:
        source, file = name.split("/")
        deliver(settings, source, file, tmp / file)
    state = store_state(settings)
    files_state = stored_files_state(settings)
    before = landing_snapshot(settings)
    outcomes = by_name(ingest_all(settings, today=TODAY))
    for name, (status, stage, text) in bad.items():
        o = outcomes[name]
        assert o.status == status and o.reason["stage"] == stage and text in why(o), (name, o.status, why(o))
    assert store_state(settings) == state and stored_files_state(settings) == files_state   # untouched
    # half the region (shifted east by 0.75 deg): a revision with a coverage warning, old days kept
    half = write_gleam(tmp, "E_2021_GLEAM_half.nc", e.assign_coords(lon=e.lon.values + 0.75))
    finer = write_gleam(tmp, "E_2021_GLEAM_v3.8a.nc", e.interp(lat=np.arange(37.35, 35.6, -0.1),
                                                              lon=np.arange(100.65, 102.4, 0.1), method="nearest"))
    deliver(settings, "gleam", half.name, half)
    before.update(landing_snapshot(settings))
    o = by_name(ingest_all(settings, today=TODAY))[f"gleam/{half.name}"]
    assert o.status == "accepted" and o.changes == {"revised": 40}
    assert "warning:validation_warning" in o.alerts and "info:revision" in o.alerts
    assert len(list((settings.harmonised / "grids" / "gleam" / "revisions").glob("*.nc"))) == 40
    deliver(settings, "gleam", finer.name, finer)
    before.update(landing_snapshot(settings))
    o = by_name(ingest_all(settings, today=TODAY))[f"gleam/{finer.name}"]
    assert o.status == "accepted" and o.changes == {"revised": 40}
    assert store.read_grid_day("gleam", "2021-06-20").sizes["lon"] == finer_lon_count(settings, store)
    assert_nothing_lost(settings, before, record_property)
    record_property("fault", "F05")
    record_property("bad_inputs", len(bad) + 2)


def finer_lon_count(settings, store) -> int:
    lon = store.read_grid_day("gleam", "2021-06-20")["lon"].values
    assert np.allclose(np.diff(lon), 0.1, atol=1e-4)
    return lon.size


# ----------------------------------------------------------------------------- F06 clock skew
def test_clock_skew_on_future_dates(home, small_world, record_property):
    """F06: the host clock behind the data (days after today + tolerance are refused as
    ``future_dates``; released after the clock is right, accepted), the host clock years ahead
    (nothing is refused for it), the tolerance edge, and a file whose mtime lies in the future
    (left in landing as 'still young' while ``ingest.min_age_seconds`` says so, never lost)."""
    settings = home.settings
    gleam = next((small_world / "landing" / "gleam").glob("*"))
    last = date(2021, 7, 19)
    deliver(settings, "gleam", gleam.name, gleam)
    before = landing_snapshot(settings)
    behind = ingest_all(settings, today=last - timedelta(days=5))          # the host clock is 5 days behind
    o = behind.outcomes[0]
    assert o.status == "quarantined" and "future_dates" in why(o)
    future = next(x for x in o.reason["outcomes"] if x["check"] == "future_dates")
    assert future["observed"]["unexpected_count"] == 4                      # 16..19 July after 14 July + 1 day
    release(settings, gleam.name)                                           # the clock is fixed: release
    assert ingest_all(settings, today=last - timedelta(days=1)).counts() == {"accepted": 1}   # tolerance edge
    assert_nothing_lost(settings, before)

    era = sorted((small_world / "landing" / "era5land").glob("*"))
    deliver(settings, "era5land", era[0].name, era[0])
    ahead = ingest_all(settings, today=date(2031, 8, 1))                   # ten years ahead: still accepted
    assert ahead.counts() == {"accepted": 1}

    # a file stamped in the future (the provider's clock, or ours, is off): not old enough yet
    young = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"min_age_seconds": 60})})
    path = deliver(settings, "era5land", era[1].name, era[1])
    os.utime(path, (time.time() + 3600, time.time() + 3600))
    skipped = ingest_all(young, today=TODAY)
    assert skipped.outcomes == [] and any("younger than" in s for s in skipped.skipped)
    assert path.exists()
    os.utime(path, (time.time() - 120, time.time() - 120))
    assert ingest_all(young, today=TODAY).counts() == {"accepted": 1}
    record_property("fault", "F06")
    record_property("bad_inputs", 3)
    record_property("files_lost", 0)


# ----------------------------------------------------------------------------- F07 a station that moves
def _cma_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _shift_dm(value: str, degrees: float) -> tuple[str, float]:
    """CMA's degrees*100+minutes moved by ``degrees``; returns the new code and its decimal degrees."""
    code = int(value)
    minutes = round((code // 100 + (code % 100) / 60 + degrees) * 60)
    return f"{minutes // 60}{minutes % 60:02d}", minutes / 60


def _write_cma(path: Path, rows: list[list[str]]) -> None:
    widths = (5, 6, 7, 7, 5, 3, 3, 6, 6, 2, 2)
    path.write_text("\n".join(" ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows) + "\n")


def test_a_station_whose_coordinates_move(home, small_world, record_property):
    """F07: a CMA station reported at new coordinates from one month on (a small move: accepted,
    each day keeps the coordinates it was observed at; a move beyond
    ``quality.station_location_tolerance_deg`` from its known place: accepted with a warning alert),
    and a corrected June that moves it retroactively: a revision, the old rows kept in history."""
    settings = home.settings
    tmp = home.root / "tmp"
    tmp.mkdir()
    june, july = sorted((small_world / "landing" / "cma").glob("*.TXT"))
    station = _cma_lines(june)[0][0]
    deliver(settings, "cma", june.name, june)
    assert ingest_all(settings, today=TODAY).counts() == {"accepted": 1}
    store = HarmonisedStore(settings.harmonised)
    old = store.read_stations("cma", with_missing=True).query("station_id == @station")
    # July: the station moved 2 arc minutes north
    rows = _cma_lines(july)
    moved_lat = None
    for r in rows:
        if r[0] == station:
            r[1], moved_lat = _shift_dm(r[1], 2 / 60)
    _write_cma(tmp / july.name, rows)
    deliver(settings, "cma", july.name, tmp / july.name)
    o = ingest_all(settings, today=TODAY).outcomes[0]
    assert o.status == "accepted" and "station_location_matches_known" not in warnings_of(settings, july.name)
    obs = store.read_stations("cma", with_missing=True).query("station_id == @station")
    june_rows, july_rows = obs[obs.date.dt.month == 6], obs[obs.date.dt.month == 7]
    assert np.allclose(june_rows.lat, old.lat.iloc[0]) and np.allclose(july_rows.lat, moved_lat, atol=1e-4)
    # a corrected June places the station 0.7 deg south of its known place: a warning, and a revision
    rows = _cma_lines(june)
    for r in rows:
        if r[0] == station:
            r[1], south = _shift_dm(r[1], -0.7)
    corrected = tmp / "june" / june.name
    corrected.parent.mkdir()
    _write_cma(corrected, rows)
    deliver(settings, "cma", june.name, corrected)
    before = landing_snapshot(settings)
    o = ingest_all(settings, today=TODAY).outcomes[0]
    assert o.status == "accepted" and "warning:validation_warning" in o.alerts
    assert "station_location_matches_known" in warnings_of(settings, june.name, sha(corrected))
    assert "revised" in o.changes
    history = _history_rows(settings, station)
    assert len(history) == len(june_rows) and np.allclose(history["lat"], old.lat.iloc[0])
    now = store.read_stations("cma", with_missing=True).query("station_id == @station")
    assert np.allclose(now[now.date.dt.month == 6].lat, south, atol=1e-4)
    assert_nothing_lost(settings, before, record_property)
    record_property("fault", "F07")
    record_property("bad_inputs", 2)


def warnings_of(settings, name: str, digest: str | None = None) -> list[str]:
    """The warning checks recorded with the latest accepted delivery of ``name``."""
    records = [r for r in deliveries(settings) if r["file_name"] == name and r["status"] == "accepted"
               and (digest is None or r["sha256"] == digest)]
    return json.loads(records[-1]["detail"])["warnings"]


def _history_rows(settings, station: str) -> pd.DataFrame:
    import sqlite3
    with sqlite3.connect(settings.harmonised / "ledger.sqlite") as db:
        return pd.read_sql_query("SELECT * FROM station_obs_history WHERE source='cma' AND station_id=?", db,
                                 params=[station])


def test_station_table_cut_inside_its_last_row_is_refused(home, small_world):
    """F01: a station table whose last row lost its last 7 characters (``101.6833,2450.0`` ->
    ``101.68``) must be refused, not stored with a wrong longitude."""
    settings = home.settings
    table = next((small_world / "landing" / "stations").glob("*.csv")).read_bytes()
    cut = table.index(b"\n", len(table) // 3) - 7
    deliver(settings, "stations", "station_et_cut.csv", table[:cut])
    assert ingest_all(settings, today=TODAY).outcomes[0].status == "quarantined"
