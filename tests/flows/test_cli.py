"""The ``etfuse`` CLI: harmonise real samples, synth, demo, exit codes and messages."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from typer.testing import CliRunner

from flows.cli import app

SERBIA = "19,43,21.5,45"


def run_cli(*args: str, env_extra: dict | None = None, home=None) -> subprocess.CompletedProcess:
    """Run the real entry point (exit-code mapping included) in a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETFUSE_") or k == "ETFUSE_REALDATA"}
    if home is not None:
        env["ETFUSE_HOME"] = str(home)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.mark.realdata
def test_harmonise_real_grib_and_netcdf(realdata, tmp_path):
    runner = CliRunner()
    grib = realdata / "era5land/DiHydro_ERA5L_hourly_2020-01_Serbia_data.grib"
    out = tmp_path / "grib.nc"
    result = runner.invoke(app, ["harmonise", "--source", "era5land", str(grib), "--out", str(out), "--bbox", SERBIA])
    assert result.exit_code == 0, result.output
    assert "era5land: 32 days x 11 x 14 cells" in result.output
    with xr.open_dataset(out) as ds:
        assert {"et", "precipitation", "t2m"} <= set(ds.data_vars)
        assert ds["et"].attrs["units"] == "kg m-2"
        # independent: ecCodes messages of 'e' valid at 00 UTC of 2 Jan 2020 hold the total of 1 Jan
        import eccodes
        with open(grib, "rb") as f:
            while (gid := eccodes.codes_grib_new_from_file(f)) is not None:
                key = (eccodes.codes_get(gid, "shortName"), eccodes.codes_get(gid, "validityDate"),
                       eccodes.codes_get(gid, "validityTime"))
                if key == ("e", 20200102, 0):
                    raw = eccodes.codes_get_values(gid).reshape(11, 14)
                eccodes.codes_release(gid)
        np.testing.assert_allclose(ds["et"].sel(time="2020-01-01").values, -1000 * raw, rtol=1e-5, atol=1e-6)
    nc = realdata / "era5land/DiHydro_ERA5L_hourly_2020-01_tp_newformat_data_0.nc"
    result = runner.invoke(app, ["harmonise", "-s", "era5land", str(nc), "-o", str(tmp_path / "nc.nc"), "--bbox", SERBIA])
    assert result.exit_code == 0 and "31 days" in result.output
    with xr.open_dataset(tmp_path / "nc.nc") as a, xr.open_dataset(out) as b:
        # the same request delivered as NetCDF and as GRIB gives the same daily precipitation
        np.testing.assert_allclose(a["precipitation"].values, b["precipitation"].sel(time=a["time"]).values,
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.realdata
def test_harmonise_real_stations_to_csv(realdata, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cma.csv"
    cma = realdata / "cma/mete840_SURF_CLI_CHN_MUL_DAY_V3_1951_tidied.csv"
    result = runner.invoke(app, ["harmonise", "-s", "cma", str(cma), "-o", str(out), "--bbox", "70,15,140,55"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out, dtype={"station_id": str})
    assert frame.columns.tolist() == ["station_id", "date", "lat", "lon", "elevation_m", "et_mm"]
    raw = pd.read_csv(cma, dtype={"site": str})
    row = raw[(raw["site"] == "50527") & (raw["date"] == "1951-01-01")].iloc[0]
    got = frame[(frame["station_id"] == "50527") & (frame["date"] == "1951-01-01")].iloc[0]
    assert got["lat"] == pytest.approx(49 + 13 / 60, abs=1e-3) and got["lon"] == pytest.approx(119 + 45 / 60, abs=1e-3)
    assert got["elevation_m"] == pytest.approx(676.6)
    assert got["et_mm"] == pytest.approx(row["ET_sml"] * 0.1 * 0.35, abs=1e-3)   # small pan, default coefficient
    flx = tmp_path / "flx.csv"
    path = realdata / "fluxnet/FLX_CN-HaM_FLUXNET2015_FULLSET_DD_2002-2004_1-4.csv"
    result = runner.invoke(app, ["harmonise", "-s", "fluxnet", str(path), "-o", str(flx)])
    assert result.exit_code == 0, result.output
    f = pd.read_csv(flx)
    assert set(f["station_id"]) == {"CN-HaM"} and len(f) == 1096 and 0.5 < f["et_mm"].mean() < 1.5


@pytest.mark.realdata
def test_harmonise_real_modis_tile(realdata, tmp_path):
    out = tmp_path / "lst.nc"
    result = CliRunner().invoke(app, ["harmonise", "-s", "modis", str(realdata / "modis/MOD11A1.hdf"), "-o", str(out),
                                      "--bbox", "-40,-9,-36,-4"])
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out) as ds:
        assert str(ds["time"].values[0])[:10] == "2019-11-01"
        assert ds["lst"].attrs["units"] == "K" and 250 < float(ds["lst"].mean()) < 340


def test_harmonise_synthetic_gleam_and_bad_input_exit_codes(small_world, tmp_path):
    gleam = next((small_world / "landing" / "gleam").glob("*.nc"))
    env = {"ETFUSE_REGION__NAME": "test"}
    ok = run_cli("harmonise", "-s", "gleam", str(gleam), "-o", str(tmp_path / "g.nc"), env_extra=env)
    assert ok.returncode == 0, ok.stderr
    with xr.open_dataset(tmp_path / "g.nc") as ds:
        assert ds.sizes["time"] == 40 and "et" in ds
    bad = tmp_path / "E_2021_GLEAM_v3.7a.nc"
    bad.write_bytes(gleam.read_bytes()[:2000])
    rejected = run_cli("harmonise", "-s", "gleam", str(bad), "-o", str(tmp_path / "x.nc"), env_extra=env)
    assert rejected.returncode == 3
    assert rejected.stderr.startswith("error: ") and "cannot be read as NetCDF" in rejected.stderr
    assert "Traceback" not in rejected.stderr
    unknown = run_cli("harmonise", "-s", "merra2", str(gleam), "-o", str(tmp_path / "x.nc"))
    assert unknown.returncode == 2 and "unknown source 'merra2'" in unknown.stderr
    far = run_cli("harmonise", "-s", "gleam", str(gleam), "-o", str(tmp_path / "x.nc"), "--bbox", "10,40,11,41")
    assert far.returncode == 3 and "does not overlap the region" in far.stderr
    assert not (tmp_path / "x.nc").exists()


def test_help_reads_like_a_manual():
    result = CliRunner().invoke(app, ["harmonise", "--help"])
    assert result.exit_code == 0
    for words in ("--source", "--out", "--bbox", "station_id,date,lat,lon,elevation_m,et_mm"):
        assert words in result.output


def test_synth_cli(tmp_path):
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path), "--bbox", "101,36,101.5,36.5",
                                      "--start", "2021-05-01", "--end", "2021-05-03", "--resolution", "0.05"])
    assert result.exit_code == 0, result.output
    assert "modis: 3" in result.output and (tmp_path / "manifest.json").exists()
    bad = CliRunner().invoke(app, ["synth", "--out", str(tmp_path), "--bbox", "101,36,100,37"])
    assert bad.exit_code == 2 and "west < east" in bad.output


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    """`make demo`'s command, run as CI runs it: the whole operational story, checked by its outcome."""
    import json
    import re
    import time

    from etfuse.settings import load_settings
    from serving.product import ProductStore

    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETFUSE_")}
    env["ETFUSE_HOME"] = str(tmp_path / "home")
    result = subprocess.run([sys.executable, "-m", "flows.cli", "demo"], capture_output=True, text=True, env=env,
                            timeout=1800)
    seconds = time.perf_counter() - t0
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    steps = [out.index(f"[{k}/8]") for k in range(1, 9)]
    assert steps == sorted(steps)
    # the first step fetches GLEAM and CMA from a local SFTP server, once
    assert re.search(r"fetch gleam: \d+ file\(s\), [\d.]+ MB from sftp://127.0.0.1:\d+ into landing/gleam/", out)
    assert re.search(r"fetch remote: \d+ file\(s\).* into landing/cma/", out)
    assert "fetched again: 0 new file(s)" in out
    # three bad deliveries quarantined and alerted, the 685 good files accepted
    assert "{'quarantined': 3, 'accepted': 685}" in out
    for name in ("era5land_202003.nc", "E_2019_GLEAM_v3.7a.nc", "E_2021_GLEAM_v3.7a_metres.nc"):
        assert f"alert critical: {name} quarantined" in out
    home = tmp_path / "home" / "demo"
    assert len(list((home / "quarantine").glob("*/*.reason.json"))) == 3
    alerts = [json.loads(line) for line in (home / "alerts" / "alerts.jsonl").read_text().splitlines()]
    assert sum(a.get("record") == "alert" and a["severity"] == "critical" for a in alerts) >= 3
    # v1 decided by the gate (promoted, or refused against the strongest baseline and then promoted by
    # hand), v2 decided by it, then a rollback to v1 that recomputed v2's days
    assert "v1 promoted:" in out or ("v1 rejected:" in out and "baseline" in out and "v1 promoted by hand" in out)
    assert re.search(r"v2 (promoted|rejected):", out)
    # today first: the rollback recomputes the newest update.recent_days (14) days, the history the other 18
    assert ("champion v2 -> v1; update with model v1: 14 day(s) to compute (replaced 14)" in out
            and "18 older stale day(s) left to the history recompute" in out), out
    assert re.search(r"then, behind the newest days: history recompute with model v1: 18 day\(s\) in \d+ chunk", out), out
    # the daily run picked up the extra day (and the month's last day, which waited for its 00 UTC step)
    assert "ingest {'accepted': 4}; update with model v1: 2 day(s) to compute (written 2)" in out
    # the summary table: the fused product beats both raw sources on the held-out station-days
    table = out.split("held-out station skill of v1:")[1]
    rmse = {row.split()[0]: float(row.split()[2]) for row in table.splitlines()
            if row.split() and row.split()[0] in ("fused", "gleam", "era5land")}
    assert rmse["fused"] < 0.8 and rmse["fused"] < rmse["gleam"] and rmse["fused"] < rmse["era5land"], rmse
    assert "Traceback" not in result.stderr + out
    # the product on disk: 32 days, all from v1 after the rollback, the yearly files and quicklooks
    settings = load_settings(home / "etfuse.yaml")
    records = ProductStore(settings).records()
    assert len(records) == 32 and {r.model_version for r in records} == {1}
    assert records[0].day.strftime("%Y-%m-%d") == "2021-12-01" and records[-1].day.strftime("%Y-%m-%d") == "2022-01-01"
    assert (home / "product" / "etfuse_et_2021.nc").exists() and (home / "product" / "etfuse_et_2022.nc").exists()
    assert len(list((home / "product" / "quicklooks").rglob("*.png"))) == 32
    assert (home / "reports" / "index.html").exists()
    assert "champion v1" in out.split("[8/8]")[1] and "quarantine: 3 file(s)" in out
    print(f"demo wall time {seconds:.0f} s")


@pytest.mark.parametrize("env_url", [None, "http://127.0.0.1:8/api"])
def test_configured_prefect_server_reaches_the_flows(tmp_path, monkeypatch, env_url):
    """prefect.api_url must be in the environment before a flow imports Prefect; PREFECT_API_URL wins."""
    from flows import cli
    config = tmp_path / "etfuse.yaml"
    config.write_text(f"home: {tmp_path / 'home'}\nprefect:\n  api_url: http://127.0.0.1:9/api\n")
    monkeypatch.setenv("PREFECT_API_URL", "placeholder")          # recorded, so the test leaves it as it was
    if env_url is None:
        monkeypatch.delenv("PREFECT_API_URL")
    else:
        monkeypatch.setenv("PREFECT_API_URL", env_url)
    monkeypatch.setitem(cli._state, "config", config)
    assert cli.settings().prefect.api_url == "http://127.0.0.1:9/api"
    assert os.environ["PREFECT_API_URL"] == (env_url or "http://127.0.0.1:9/api")
