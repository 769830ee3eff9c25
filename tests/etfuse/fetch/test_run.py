"""The fetch run: dry runs, the overdue alert, one fetch per source at a time, credentials from
the environment, .env and .netrc."""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone

import pytest

from etfuse.errors import UnknownNameError
from etfuse.fetch import fetcher_names
from etfuse.fetch.credentials import login
from etfuse.fetch.ledger import FetchLedger
from etfuse.fetch.run import run_fetch, source_lock
from tests.etfuse.fetch.conftest import alerts, landing_names, make_settings
from tests.etfuse.fetch.standins import CdsClient

DAY = dict(since=date(2021, 6, 1), until=date(2021, 6, 1), today=date(2022, 1, 1))


def test_registry():
    assert fetcher_names() == ["era5land", "gleam", "modis", "remote"]
    with pytest.raises(UnknownNameError, match="expected one of"):
        run_fetch(make_settings.__globals__["load_settings"](), ["ftp"])


def test_dry_run_writes_nothing(tmp_path, monkeypatch):
    settings = make_settings(tmp_path, monkeypatch, era5land={"enabled": True})
    client = CdsClient(today=DAY["today"])
    report = run_fetch(settings, dry_run=True, clients={"era5land": client}, **DAY)
    assert [i.name for i in report.sources[0].planned] == ["era5land_20210601-20210601_final.nc"]
    assert client.requests == [] and landing_names(settings, "era5land") == []
    assert FetchLedger.of(settings).rows() == [] and FetchLedger.of(settings).first_run_at("era5land") is None


def test_overdue_alert_after_the_freshness_delay(tmp_path, monkeypatch):
    settings = make_settings(tmp_path, monkeypatch, era5land={"enabled": True})
    client = CdsClient(today=DAY["today"])
    now = datetime.now(timezone.utc)
    assert run_fetch(settings, clients={"era5land": client}, now=now, **DAY).sources[0].fetched
    # nothing new 5 days later: within freshness.era5land_days (6)
    assert run_fetch(settings, clients={"era5land": client}, now=now + timedelta(days=5), **DAY).sources[0].overdue is None
    assert alerts(settings) == []
    late = run_fetch(settings, clients={"era5land": client}, now=now + timedelta(days=7), **DAY).sources[0]
    assert late.overdue and "freshness.era5land_days allows 6" in late.overdue
    alert, = alerts(settings)
    assert (alert["kind"], alert["severity"], alert["source"]) == ("fetch_overdue", "warning", "era5land")


def test_overdue_counts_from_the_first_run_when_nothing_was_ever_fetched(tmp_path, monkeypatch):
    settings = make_settings(tmp_path, monkeypatch, era5land={"enabled": True, "retries": 1, "backoff_s": 0.01})
    client = CdsClient(today=DAY["today"], fail=ConnectionError("down"))
    now = datetime.now(timezone.utc)
    first = run_fetch(settings, clients={"era5land": client}, now=now, **DAY).sources[0]
    assert first.error_kind == "provider_down" and first.overdue is None
    later = run_fetch(settings, clients={"era5land": client}, now=now + timedelta(days=10), **DAY).sources[0]
    assert "nothing fetched since the first run" in later.overdue
    assert sorted(a["kind"] for a in alerts(settings)) == ["fetch_failed", "fetch_failed", "fetch_overdue"]


def test_one_fetch_per_source_at_a_time(tmp_path, monkeypatch):
    settings = make_settings(tmp_path, monkeypatch, era5land={"enabled": True})
    client = CdsClient(today=DAY["today"])
    with source_lock(settings, "era5land") as held:
        assert held
        report = run_fetch(settings, clients={"era5land": client}, **DAY)
    assert report.sources[0].skipped and client.requests == []
    assert run_fetch(settings, clients={"era5land": client}, **DAY).sources[0].fetched


def test_credentials_from_environment_dotenv_and_netrc(tmp_path, monkeypatch):
    settings = make_settings(tmp_path, monkeypatch)
    for name in ("GLEAM_SFTP_USERNAME", "GLEAM_SFTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert login(settings, "GLEAM_SFTP", "sftp.example.org") is None
    (tmp_path / "netrc").write_text("machine sftp.example.org login nuser password npw\n")
    os.chmod(tmp_path / "netrc", 0o600)
    found = login(settings, "GLEAM_SFTP", "sftp.example.org")
    assert (found.username, found.password) == ("nuser", "npw") and "npw" not in repr(found)
    env_file = tmp_path / "creds.env"
    env_file.write_text("GLEAM_SFTP_USERNAME=duser\nGLEAM_SFTP_PASSWORD=dpw\n")
    settings = make_settings(tmp_path, monkeypatch, env_file=str(env_file))
    assert login(settings, "GLEAM_SFTP", "sftp.example.org").username == "duser"
    monkeypatch.setenv("GLEAM_SFTP_USERNAME", "euser")
    monkeypatch.setenv("GLEAM_SFTP_PASSWORD", "epw")
    assert (login(settings, "GLEAM_SFTP", "x").username, login(settings, "GLEAM_SFTP", "x").password) == ("euser", "epw")
    assert "epw" not in settings.to_yaml() and "dpw" not in settings.to_yaml()


def test_a_password_in_a_url_is_refused(tmp_path, monkeypatch):
    from pydantic import ValidationError
    for source in ("gleam", "remote"):
        with pytest.raises(ValidationError, match="carries a password") as refused:
            make_settings(tmp_path, monkeypatch, **{source: {"url": "sftp://user:secret@host:2225/data"}})
        assert "secret" not in str(refused.value)
    assert make_settings(tmp_path, monkeypatch, gleam={"url": "sftp://user@host:2225"}).fetch.gleam.url
