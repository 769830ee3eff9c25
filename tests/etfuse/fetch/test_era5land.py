"""``era5land`` at the CDS client boundary: the requests it builds against the documented CDS
form, ERA5T re-requests, splitting, errors; files written by a stand-in in the new CDS layout."""

from __future__ import annotations

import os
from datetime import date

import pytest

from etfuse.fetch.era5land import HOURS, build_requests, request_area, wanted_days
from etfuse.fetch.ledger import FetchLedger
from etfuse.fetch.run import run_fetch
from etfuse.sources import read_source
from tests.etfuse.fetch.conftest import alerts, landing_names, make_settings
from tests.etfuse.fetch.standins import CdsClient, day_range

VARIABLES = ["total_evaporation", "surface_net_solar_radiation", "surface_net_thermal_radiation", "skin_temperature"]
AREA_TEST = [38.0, 100.0, 35.0, 103.0]        # test region 100.5-102.5 E, 35.5-37.5 N plus 0.5 deg


def era5_settings(tmp_path, monkeypatch, **extra):
    return make_settings(tmp_path, monkeypatch, era5land={"enabled": True, "retries": 0, **extra})


def test_month_request_matches_the_cds_form(tmp_path, monkeypatch):
    settings = era5_settings(tmp_path, monkeypatch)
    assert request_area(settings) == AREA_TEST
    client = CdsClient(today=date(2022, 1, 1))
    report = run_fetch(settings, ["era5land"], since=date(2021, 6, 1), until=date(2021, 6, 30),
                       today=date(2022, 1, 1), clients={"era5land": client})
    assert report.sources[0].error is None
    assert client.requests == [("reanalysis-era5-land", {
        "variable": VARIABLES, "year": "2021", "month": "06", "day": [f"{d:02d}" for d in range(1, 31)],
        "time": [f"{h:02d}:00" for h in range(24)], "data_format": "netcdf", "download_format": "unarchived",
        "area": AREA_TEST})]
    assert landing_names(settings, "era5land") == ["era5land_20210601-20210630_final.nc"]
    # the real reader reads what the stand-in wrote (new CDS NetCDF layout)
    ds = read_source("era5land", settings.folder("landing") / "era5land" / "era5land_20210601-20210630_final.nc",
                     settings=settings)
    assert ds.sizes["time"] >= 29 and "skt" in ds
    row, = FetchLedger.of(settings).rows("era5land")
    assert not row.provisional and row.days == tuple(day_range("2021-06-01", "2021-06-30"))
    # again: nothing asked
    run_fetch(settings, ["era5land"], since=date(2021, 6, 1), until=date(2021, 6, 30), today=date(2022, 1, 1),
              clients={"era5land": client})
    assert len(client.requests) == 1


def test_single_day_and_qinghai_area(tmp_path, monkeypatch):
    settings = era5_settings(tmp_path, monkeypatch)
    settings = settings.model_copy(update={"region": type(settings.region)()})          # Qinghai
    assert request_area(settings) == [40.4, 89.0, 30.8, 103.9]
    (request, days, provisional), = build_requests(settings, [(date(2021, 3, 7), False)])
    assert request["year"] == "2021" and request["month"] == "03" and request["day"] == ["07"]
    assert request["time"] == list(HOURS) and len(HOURS) == 24 and not provisional


def test_era5t_days_are_asked_again_once_final(tmp_path, monkeypatch):
    settings = era5_settings(tmp_path, monkeypatch)
    since, until = date(2021, 6, 28), date(2021, 7, 5)
    early = CdsClient(today=date(2021, 7, 10))
    run_fetch(settings, ["era5land"], since=since, until=until, today=date(2021, 7, 10), clients={"era5land": early})
    assert [(r["month"], r["day"]) for _, r in early.requests] == [("06", ["28", "29", "30"]),
                                                                    ("07", ["01", "02", "03", "04", "05"])]
    assert landing_names(settings, "era5land") == ["era5land_20210628-20210630_era5t.nc",
                                                   "era5land_20210701-20210705_era5t.nc"]
    assert all(r.provisional for r in FetchLedger.of(settings).rows("era5land"))
    # still ERA5T a month later: nothing asked again
    run_fetch(settings, ["era5land"], since=since, until=until, today=date(2021, 8, 10), clients={"era5land": early})
    assert len(early.requests) == 2
    # 91 days after 30 June (but only 90 after 1 July): June's days again, as final
    later = CdsClient(today=date(2021, 9, 29))
    run_fetch(settings, ["era5land"], since=since, until=until, today=date(2021, 9, 29), clients={"era5land": later})
    assert [(r["month"], r["day"]) for _, r in later.requests] == [("06", ["28", "29", "30"])]
    assert "era5land_20210628-20210630_final.nc" in landing_names(settings, "era5land")
    # and July once it is final too; then nothing more
    last = CdsClient(today=date(2021, 12, 1))
    for _ in range(2):
        run_fetch(settings, ["era5land"], since=since, until=until, today=date(2021, 12, 1), clients={"era5land": last})
    assert [(r["month"], r["day"]) for _, r in last.requests] == [("07", ["01", "02", "03", "04", "05"])]


def test_default_window_stops_at_the_era5t_latency(tmp_path, monkeypatch):
    settings = era5_settings(tmp_path, monkeypatch, lookback_days=3, latency_days=5)
    plan = run_fetch(settings, ["era5land"], today=date(2021, 7, 10), dry_run=True,
                     clients={"era5land": CdsClient(today=date(2021, 7, 10))}).sources[0].planned
    assert [i.days for i in plan] == [("2021-07-03", "2021-07-04", "2021-07-05")] and plan[0].provisional


def test_large_requests_are_split(tmp_path, monkeypatch):
    settings = era5_settings(tmp_path, monkeypatch, max_fields_per_request=4 * 24 * 10)
    requests = build_requests(settings, [(d, False) for d in map(date.fromisoformat, day_range("2021-06-01", "2021-07-31"))])
    assert [(r["month"], len(r["day"])) for r, _, _ in requests] == [("06", 10), ("06", 10), ("06", 10), ("07", 10),
                                                                      ("07", 10), ("07", 10), ("07", 1)]
    assert all(len(r["variable"]) * len(r["time"]) * len(r["day"]) <= 960 for r, _, _ in requests)


def test_wanted_days_skip_final_and_fresh_era5t():
    class Row:
        def __init__(self, days, provisional):
            self.days, self.provisional = days, provisional
    rows = [Row(("2021-01-01", "2021-01-02"), False), Row(("2021-01-03",), True)]
    got = wanted_days(rows, since=date(2021, 1, 1), until=date(2021, 1, 4), today=date(2021, 2, 1), final_delay_days=90)
    assert got == [(date(2021, 1, 4), True)]


def _http_error(status: int):
    import requests
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} Client Error: for url: https://cds.climate.copernicus.eu/api/retrieve", response=response)


@pytest.mark.parametrize("fail,kind", [(_http_error(401), "credentials"), (_http_error(403), "credentials"),
                                       (Exception("cost limits exceeded: Your request is too large"), "request_refused"),
                                       (Exception("required licences not accepted"), "request_refused"),
                                       (_http_error(429), "quota_exceeded"),
                                       (ConnectionError("Max retries exceeded"), "provider_down")])
def test_provider_errors_are_named(tmp_path, monkeypatch, fail, kind):
    settings = era5_settings(tmp_path, monkeypatch, backoff_s=0.0)
    report = run_fetch(settings, ["era5land"], since=date(2021, 6, 1), until=date(2021, 6, 1), today=date(2022, 1, 1),
                       clients={"era5land": CdsClient(today=date(2022, 1, 1), fail=fail)})
    assert report.sources[0].error_kind == kind
    assert [a["kind"] for a in alerts(settings)] == ["fetch_failed"]
    assert landing_names(settings, "era5land") == []


def test_missing_cds_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("CDSAPI_URL", "CDSAPI_KEY", "CDSAPI_RC", "ECMWF_DATASTORES_URL", "ECMWF_DATASTORES_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CDSAPI_RC", str(tmp_path / "none.cdsapirc"))
    settings = era5_settings(tmp_path, monkeypatch)
    report = run_fetch(settings, ["era5land"], since=date(2021, 6, 1), until=date(2021, 6, 1), today=date(2022, 1, 1))
    assert report.sources[0].error_kind == "credentials", report.sources[0].error


@pytest.mark.skipif(not (os.environ.get("CDSAPI_KEY") or os.path.exists(os.path.expanduser("~/.cdsapirc"))),
                    reason="live CDS test: needs CDS credentials (CDSAPI_URL/CDSAPI_KEY or ~/.cdsapirc) and internet")
def test_live_cds_one_day(tmp_path, monkeypatch):
    settings = era5_settings(tmp_path, monkeypatch, retries=1, variables=("skin_temperature",))
    report = run_fetch(settings, ["era5land"], since=date(2021, 6, 1), until=date(2021, 6, 1))
    assert report.sources[0].error is None
    path = settings.folder("landing") / "era5land" / "era5land_20210601-20210601_final.nc"
    assert "skt" in read_source("era5land", path, settings=settings)
