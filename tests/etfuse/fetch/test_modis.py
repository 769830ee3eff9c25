"""``modis`` at the earthaccess boundary: the region's tiles, the CMR search, login strategies,
every tile of a day downloaded once with size and MD5 checked; real HDF4 tiles from a stand-in."""

from __future__ import annotations

import os
from datetime import date

import pytest

from etfuse.fetch.ledger import FetchLedger
from etfuse.fetch.modis import region_tiles, tile_of
from etfuse.fetch.run import run_fetch
from etfuse.settings import RegionSettings
from tests.etfuse.fetch.conftest import alerts, landing_names, make_settings
from tests.etfuse.fetch.standins import Earthaccess


@pytest.fixture
def earthdata_env(monkeypatch, tmp_path):
    monkeypatch.setenv("EARTHDATA_USERNAME", "someone")
    monkeypatch.setenv("EARTHDATA_PASSWORD", "pw-not-shown")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def modis_settings(tmp_path, monkeypatch, qinghai: bool = True, **extra):
    settings = make_settings(tmp_path, monkeypatch, modis={"enabled": True, "retries": 1, "backoff_s": 0.0, **extra})
    return settings.model_copy(update={"region": RegionSettings()}) if qinghai else settings


def test_qinghai_tiles():
    from etfuse.settings import load_settings
    from etfuse.synth.writers_modis import sinusoidal_tile_latlon
    for h, v in [(24, 5), (25, 5), (26, 5), (25, 4)]:        # pixel centres of the synthetic writer's tiles
        lat, lon = sinusoidal_tile_latlon(h, v, n=12)
        assert {tile_of(float(x), float(y)) for x, y in zip(lon.ravel(), lat.ravel())} == {(h, v)}
    assert region_tiles(load_settings(region="qinghai")) == ["h24v05", "h25v05", "h26v05"]
    assert region_tiles(load_settings(region="qinghai", fetch={"modis": {"tiles": ["h25v05"]}})) == ["h25v05"]


def test_one_day_all_region_tiles(tmp_path, monkeypatch, earthdata_env):
    settings = modis_settings(tmp_path, monkeypatch)
    client = Earthaccess(tmp_path / "lpdaac")
    report = run_fetch(settings, ["modis"], since=date(2021, 6, 1), until=date(2021, 6, 1), today=date(2021, 6, 5),
                       clients={"modis": client})
    assert report.sources[0].error is None, report.sources[0].error
    assert client.logins == ["environment"]
    assert client.searches == [{"short_name": "MOD11A1", "version": "061", "temporal": ("2021-06-01", "2021-06-01"),
                                "bounding_box": (89.5, 31.37, 103.4, 39.87)}]
    names = landing_names(settings, "modis")
    assert names == [f"MOD11A1.A2021152.h{h}v05.061.2019306084028.hdf" for h in (24, 25, 26)]   # not h27v05
    for name in names:                                      # byte-identical to the provider's tile
        assert (settings.folder("landing") / "modis" / name).read_bytes() == (tmp_path / "lpdaac" / name).read_bytes()
    rows = FetchLedger.of(settings).rows("modis")
    assert all(r.checksum.startswith("md5:") and r.days == ("2021-06-01",) for r in rows)
    # a second run downloads nothing
    run_fetch(settings, ["modis"], since=date(2021, 6, 1), until=date(2021, 6, 1), today=date(2021, 6, 5),
              clients={"modis": client})
    assert len(client.downloads) == 3


def test_test_region_tiles_are_read_by_the_reader(tmp_path, monkeypatch, earthdata_env):
    from etfuse.sources import read_source
    settings = modis_settings(tmp_path, monkeypatch, qinghai=False)
    client = Earthaccess(tmp_path / "lpdaac", tiles=("h25v05", "h26v05"))
    run_fetch(settings, ["modis"], since=date(2021, 6, 1), until=date(2021, 6, 1), today=date(2021, 6, 5),
              clients={"modis": client})
    paths = sorted((settings.folder("landing") / "modis").glob("*.hdf"))
    assert len(paths) == 2
    ds = read_source("modis", paths, settings=settings)
    assert ds.sizes["time"] == 1 and float(ds["lst"].mean()) > 250


def test_checksum_mismatch_never_reaches_landing(tmp_path, monkeypatch, earthdata_env):
    settings = modis_settings(tmp_path, monkeypatch)
    bad = "MOD11A1.A2021152.h25v05.061.2019306084028.hdf"
    client = Earthaccess(tmp_path / "lpdaac", corrupt={bad})
    report = run_fetch(settings, ["modis"], since=date(2021, 6, 1), until=date(2021, 6, 1), today=date(2021, 6, 5),
                       clients={"modis": client})
    assert report.sources[0].error_kind == "transfer_failed" and "checksum md5 mismatch" in report.sources[0].error
    assert client.downloads.count(bad) == 2                                  # retried once
    assert bad not in landing_names(settings, "modis")
    assert [n for n in landing_names(settings, "modis") if n.startswith(".") and n.endswith(".part")] == []


def test_missing_and_wrong_earthdata_login(tmp_path, monkeypatch):
    monkeypatch.delenv("EARTHDATA_USERNAME", raising=False)
    monkeypatch.delenv("EARTHDATA_PASSWORD", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    settings = modis_settings(tmp_path, monkeypatch)
    report = run_fetch(settings, ["modis"], since=date(2021, 6, 1), until=date(2021, 6, 1), today=date(2021, 6, 5),
                       clients={"modis": Earthaccess(tmp_path / "lpdaac")})
    assert report.sources[0].error_kind == "credentials" and "EARTHDATA_USERNAME" in report.sources[0].error

    netrc = tmp_path / "netrc"
    netrc.write_text("machine urs.earthdata.nasa.gov login someone password wrong-pw\n")
    os.chmod(netrc, 0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    client = Earthaccess(tmp_path / "lpdaac", authenticated=False)
    report = run_fetch(settings, ["modis"], since=date(2021, 6, 1), until=date(2021, 6, 1), today=date(2021, 6, 5),
                       clients={"modis": client})
    assert client.logins == ["netrc"]
    assert report.sources[0].error_kind == "credentials" and "refused" in report.sources[0].error
    assert "wrong-pw" not in (settings.folder("alerts") / "alerts.jsonl").read_text()
    assert len(alerts(settings)) == 2


@pytest.mark.skipif(not (os.environ.get("EARTHDATA_USERNAME") and os.environ.get("EARTHDATA_PASSWORD")),
                    reason="live Earthdata test: needs EARTHDATA_USERNAME/EARTHDATA_PASSWORD and internet")
def test_live_earthdata_one_day(tmp_path, monkeypatch):
    settings = modis_settings(tmp_path, monkeypatch, tiles=("h25v05",))
    report = run_fetch(settings, ["modis"], since=date(2021, 6, 1), until=date(2021, 6, 1))
    assert report.sources[0].error is None
    assert any(n.startswith("MOD11A1.A2021152.h25v05") for n in landing_names(settings, "modis"))
