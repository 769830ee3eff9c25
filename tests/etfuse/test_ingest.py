"""Ingest: every landing file ends accepted (archived) or quarantined (with a reason), alerts go out,
nothing is lost, re-running changes nothing, revisions are recorded and marked for reprocessing."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import threading
import zipfile
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from etfuse.alerts import read_alert_log
from etfuse.ingest import discover, ingest_all, quarantined, release, safe_name
from etfuse.store import HarmonisedStore
from tests.conftest import SMALL_WORLD

TODAY = date(2021, 8, 1)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", Hook.received
    server.shutdown()


def world_settings(tmp_path, small_world, **extra):
    from etfuse.settings import load_settings
    w, s, e, n = SMALL_WORLD["bbox"]
    return load_settings(home=tmp_path / "home",
                         region={"name": "small", "lon_min": w, "lon_max": e, "lat_min": s, "lat_max": n,
                                 "resolution_deg": SMALL_WORLD["resolution_deg"], "margin_deg": SMALL_WORLD["margin_deg"]},
                         **extra)


def fill_landing(settings, small_world, sources=("era5land", "gleam", "modis", "cma", "stations"), modis_days=5):
    landing = settings.folder("landing")
    for source in sources:
        files = sorted((small_world / "landing" / source).glob("*"))
        if source == "modis":
            files = files[:modis_days]
        for f in files:
            (landing / source).mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, landing / source / f.name)


def bad_inputs(settings, small_world) -> dict[str, str]:
    """Write the bad deliveries into landing/; returns {source/name: what is wrong}."""
    landing = settings.folder("landing")
    gleam = next((small_world / "landing" / "gleam").glob("*.nc"))
    cma = sorted((small_world / "landing" / "cma").glob("*.TXT"))[0]
    bad = {}

    def put(source, name, data: bytes, why):
        (landing / source).mkdir(parents=True, exist_ok=True)
        (landing / source / name).write_bytes(data)
        bad[f"{source}/{name}"] = why

    put("gleam", "E_2020_GLEAM_v3.7a.nc", gleam.read_bytes()[:3000], "truncated NetCDF")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("README.txt", "the CDS job failed")
    put("era5land", "era5land_202108.nc", buf.getvalue(), "ZIP with no NetCDF inside")
    put("era5land", "empty.nc", b"", "empty file")
    # wrong units attribute: refused by the reader
    tmp = settings.home / "tmp.nc"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(gleam, tmp)
    with netCDF4.Dataset(tmp, "a") as nc:
        nc["E"].units = "m/day"
    put("gleam", "E_2019_GLEAM_v3.7a.nc", tmp.read_bytes(), "units attribute m/day")
    # values in metres but labelled mm: refused by validation
    shutil.copy2(gleam, tmp)
    with netCDF4.Dataset(tmp, "a") as nc:
        nc["E"][:] = nc["E"][:] / 1000.0
        nc["time"][:] = nc["time"][:] - 3 * 365
    put("gleam", "E_2018_GLEAM_v3.7a.nc", tmp.read_bytes(), "ET in metres labelled mm")
    # values out of range
    shutil.copy2(gleam, tmp)
    with netCDF4.Dataset(tmp, "a") as nc:
        values = nc["E"][:]
        values[:, 2:4, 2:4] = 80.0
        nc["E"][:] = values
        nc["time"][:] = nc["time"][:] - 4 * 365
    put("gleam", "E_2017_GLEAM_v3.7a.nc", tmp.read_bytes(), "ET out of range")
    # future dates relative to TODAY
    shutil.copy2(gleam, tmp)
    with netCDF4.Dataset(tmp, "a") as nc:
        nc["time"][:] = nc["time"][:] + 365
    put("gleam", "E_2022_GLEAM_v3.7a.nc", tmp.read_bytes(), "future dates")
    # wrong region: the same file shifted far away
    shutil.copy2(gleam, tmp)
    with netCDF4.Dataset(tmp, "a") as nc:
        nc["lon"][:] = nc["lon"][:] - 80.0
    put("gleam", "E_2016_GLEAM_v3.7a.nc", tmp.read_bytes(), "wrong region")
    # duplicate: identical bytes to an accepted file under another name
    put("gleam", "E_2021_GLEAM_v3.7a_copy.nc", gleam.read_bytes(), "duplicate")
    # CMA: a malformed row
    text = cma.read_text().splitlines()
    text.insert(3, "52866 3644 10145 22952 2021 6")
    put("cma", "SURF_CLI_CHN_MUL_DAY-EVP-13240-202105.TXT", ("\n".join(text) + "\n").encode(), "malformed row")
    # CMA: special codes (decoded as missing, accepted)
    rows = [line.split() for line in cma.read_text().splitlines()]
    rows[0][8], rows[1][7], rows[2][7] = "32766", "32700", "32744"
    special = "\n".join(" ".join(r) for r in rows).replace(" 2021 6 ", " 2021 5 ") + "\n"
    put("cma", "SURF_CLI_CHN_MUL_DAY-EVP-13240-202104.TXT", special.replace(" 2021 5 ", " 2021 4 ").encode(),
        "special codes")
    # a station outside the region (in the margin) and one far outside
    table = ("station_id,date,et_mm,lat,lon,elevation_m\nLYS-X,2021-06-20,1.5,36.5,101.5,2500\n"
             "LYS-Y,2021-06-20,1.2,37.2,101.5,2600\n52866,2021-06-20,1.2,45.0,101.5,2295\n")
    put("stations", "outside.csv", table.encode(), "a station outside the region")
    return bad


def test_landing_zone_outcomes_alerts_and_nothing_lost(tmp_path, small_world, webhook):
    url, received = webhook
    settings = world_settings(tmp_path, small_world, alerts={"webhook_url": url, "group_window_minutes": 60})
    fill_landing(settings, small_world)
    bad = bad_inputs(settings, small_world)
    before = {f"{p.parent.name}/{p.name}": sha(p) for p in settings.folder("landing").rglob("*") if p.is_file()}
    report = ingest_all(settings, today=TODAY)
    status = {f"{o.source}/{o.file}": o for o in report.outcomes}
    assert set(status) == set(before)

    expect = {
        "gleam/E_2020_GLEAM_v3.7a.nc": ("quarantined", "read", "cannot be read as NetCDF"),
        "era5land/era5land_202108.nc": ("quarantined", "read", "ZIP member 'README.txt'"),
        "era5land/empty.nc": ("quarantined", "read", "an empty file"),
        "gleam/E_2019_GLEAM_v3.7a.nc": ("quarantined", "read", "unexpected units"),
        "gleam/E_2018_GLEAM_v3.7a.nc": ("quarantined", "validation", "et_units_look_metres"),
        "gleam/E_2017_GLEAM_v3.7a.nc": ("quarantined", "validation", "et_range"),
        "gleam/E_2022_GLEAM_v3.7a.nc": ("quarantined", "validation", "future_dates"),
        "gleam/E_2016_GLEAM_v3.7a.nc": ("quarantined", "read", "does not overlap the region"),
        "cma/SURF_CLI_CHN_MUL_DAY-EVP-13240-202105.TXT": ("quarantined", "read", "line 4"),
        "gleam/E_2021_GLEAM_v3.7a_copy.nc": ("duplicate", None, None),
        "cma/SURF_CLI_CHN_MUL_DAY-EVP-13240-202104.TXT": ("accepted", None, None),
    }
    for name, (want, stage, text) in expect.items():
        o = status[name]
        assert o.status == want, (name, o.status, o.reason)
        if stage:
            assert o.reason["stage"] == stage, (name, o.reason)
            blob = json.dumps(o.reason)
            assert text in blob, (name, blob[:500])
    # a station in the margin (outside the region, inside the clipping box) is accepted and reported;
    # unknown ids are a warning
    outside = status["stations/outside.csv"]
    assert outside.status == "accepted" and outside.alerts == ["warning:validation_warning"]
    report = json.loads(Path(outside.kept_as).read_bytes() and next(
        settings.folder("reports").glob("stations/*/outside.csv-*.json")).read_text())
    by_check = {x["check"]: x for x in report["outcomes"]}
    assert by_check["stations_in_margin"]["success"] is False and by_check["stations_in_margin"]["severity"] == "info"
    assert by_check["stations_in_margin"]["observed"]["unexpected_where"] == ["LYS-Y 2021-06-20"]
    assert by_check["station_id_known"]["success"] is False
    # Xining (52866) placed at 45 N: dropped by the reader, and reported as a known station out of place
    assert by_check["known_station_outside_area"]["success"] is False
    assert by_check["known_station_outside_area"]["severity"] == "warning"
    # the good files are all accepted
    for name, o in status.items():
        if name not in bad:
            assert o.status == "accepted", (name, o.reason)

    # nothing lost: every input is in archive or quarantine, byte-identical
    kept = {}
    for folder in ("archive", "quarantine"):
        for p in settings.folder(folder).rglob("*"):
            if p.is_file() and not p.name.endswith(".json"):
                kept.setdefault(sha(p), []).append(p)
    for name, digest in before.items():
        assert digest in kept, f"{name} lost"
    assert not [p for p in settings.folder("landing").rglob("*") if p.is_file()]

    # every quarantined file has a reason record; `quarantine list` sees them
    listed = {f"{q['source']}/{q['file']}" for q in quarantined(settings)}
    assert {n for n, o in status.items() if o.status == "quarantined"} == listed

    # alerts: one per quarantined problem kind, grouped; all in the JSON-lines log, webhook received
    log = read_alert_log(settings)
    alerts = [r for r in log if r["record"] == "alert"]
    quarantined_names = {Path(r["file"]).name for r in alerts if r["kind"] in ("quarantined", "unreadable")}
    assert {Path(n).name for n, o in status.items() if o.status == "quarantined"} <= quarantined_names
    assert received, "the webhook got nothing"
    texts = " ".join(p["text"] for p in received)
    assert "CRITICAL" in texts and "E_2017_GLEAM_v3.7a.nc" in texts
    suppressed = [r for r in alerts if r["suppressed"]]
    assert len(received) == len(alerts) - len(suppressed)          # grouped ones were not re-posted

    # validation reports exist for validated files and are linked from their alerts
    linked = [r for r in alerts if r["kind"] == "quarantined" and r["report_url"]]
    assert linked and all(Path(r["report_url"].replace("file://", "")).exists() for r in linked)


def test_rerun_changes_nothing_and_revisions_are_marked(tmp_path, small_world):
    settings = world_settings(tmp_path, small_world)
    fill_landing(settings, small_world, sources=("era5land", "gleam"))
    first = ingest_all(settings, today=TODAY)
    assert first.counts() == {"accepted": 3}
    store = HarmonisedStore(settings.harmonised)
    state = sorted(p.stat().st_mtime_ns for p in settings.harmonised.rglob("*.nc"))
    # the same files delivered again
    fill_landing(settings, small_world, sources=("era5land", "gleam"))
    again = ingest_all(settings, today=TODAY)
    assert again.counts() == {"duplicate": 3}
    assert sorted(p.stat().st_mtime_ns for p in settings.harmonised.rglob("*.nc")) == state
    assert ingest_all(settings, today=TODAY).counts() == {}          # landing is empty: nothing to do
    # a revised July file: ERA5T replaced by final with different values
    july = sorted((small_world / "landing" / "era5land").glob("*.nc"))[-1]
    from etfuse.sources.era5land import hourly
    from etfuse.synth.writers_grids import write_era5land_cds_netcdf
    h = hourly(july).rename({"lat": "latitude", "lon": "longitude"})
    h["e"] = h["e"] * 1.05
    h = h.assign_coords(expver=("valid_time", np.full(h.sizes["valid_time"], "0001"))).drop_vars("expver_stream")
    revised = settings.folder("landing") / "era5land" / july.name
    write_era5land_cds_netcdf(revised, h)
    out = ingest_all(settings, today=TODAY)
    o = out.outcomes[0]
    assert o.status == "accepted" and o.changes.get("revised", 0) >= 19
    pending = store.pending_reprocess()
    assert len(pending) == o.changes["revised"] and set(pending["source"]) == {"era5land"}
    assert store.read_grid_day("era5land", "2021-07-19")["et"].attrs["era5_stream"] == "final"
    revs = store.revisions("era5land")
    assert len(revs) >= 19 and set(revs["file_name"]) == {july.name}
    alerts = [r for r in read_alert_log(settings) if r["record"] == "alert" and r["kind"] == "revision"]
    assert alerts and alerts[0]["severity"] == "info"
    # both versions of the raw file are archived (content-addressed names)
    archived = [p for p in settings.folder("archive").rglob(f"*{july.name}")]
    assert len(archived) == 2


def test_quarantine_release_reingests_after_a_fix(tmp_path, small_world):
    settings = world_settings(tmp_path, small_world)
    gleam = next((small_world / "landing" / "gleam").glob("*.nc"))
    (settings.folder("landing") / "gleam").mkdir(parents=True)
    target = settings.folder("landing") / "gleam" / gleam.name
    shutil.copy2(gleam, target)
    with netCDF4.Dataset(target, "a") as nc:
        nc["E"].units = "furlongs"
    assert ingest_all(settings, today=TODAY).counts() == {"quarantined": 1}
    q = settings.folder("quarantine") / "gleam" / gleam.name
    assert q.exists() and json.loads(q.with_name(q.name + ".reason.json").read_text())["stage"] == "read"
    with netCDF4.Dataset(q, "a") as nc:                      # the operator fixes the attribute
        nc["E"].units = "mm/day"
    lf = release(settings, gleam.name)
    assert lf.path == target and target.exists() and not q.exists()
    assert ingest_all(settings, today=TODAY).counts() == {"accepted": 1}
    assert quarantined(settings) == []
    with pytest.raises(Exception, match="no quarantined file named"):
        release(settings, "nothing.nc")


def test_discover_skips_partial_unknown_and_misplaced_files(tmp_path, small_world):
    settings = world_settings(tmp_path, small_world)
    landing = settings.folder("landing")
    (landing / "gleam").mkdir(parents=True)
    (landing / "gleam" / "E_2021_GLEAM_v3.7a.nc.part").write_bytes(b"x")
    (landing / "gleam" / ".hidden").write_bytes(b"x")
    (landing / "merra2").mkdir()
    (landing / "stray.nc").write_bytes(b"x")
    files, skipped = discover(settings)
    assert files == []
    text = " ".join(skipped)
    assert "still being written" in text and "merra2/: not a known source folder" in text and "stray.nc: directly in landing" in text
    assert "gleam/.hidden: hidden" in text and (landing / "gleam" / ".hidden").exists()


def test_provider_names_are_sanitised():
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("a b/..\\c.nc") == "c.nc"
    assert safe_name("..") == "unnamed" and safe_name("x;rm -rf.nc") == "x_rm_-rf.nc"
