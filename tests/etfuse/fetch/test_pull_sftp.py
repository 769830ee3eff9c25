"""``gleam`` and ``remote`` against a real SFTP server (asyncssh) on loopback, with faults."""

from __future__ import annotations

import os

import pytest

from etfuse.fetch.download import partial_paths
from etfuse.fetch.ledger import FetchLedger
from etfuse.fetch.run import run_fetch
from tests.etfuse.fetch.conftest import FAST, PASSWORD, alerts, landing_names, make_settings
from tests.etfuse.fetch.servers import make_files

GLEAM_FILES = ["data/v3.7a/daily/2020/E_2020_GLEAM_v3.7a.nc", "data/v3.7a/daily/2021/E_2021_GLEAM_v3.7a.nc"]


def gleam_settings(tmp_path, monkeypatch, server, **extra):
    return make_settings(tmp_path, monkeypatch, gleam={"enabled": True, "url": server.url,
                                                       "known_hosts": str(server.known_hosts), **FAST, **extra})


def test_gleam_fetches_new_years_and_versions_once(tmp_path, monkeypatch, upstream, sftp):
    data = make_files(upstream, GLEAM_FILES)
    make_files(upstream, ["data/v3.7a/daily/2021/README.txt"])             # not matching the pattern
    settings = gleam_settings(tmp_path, monkeypatch, sftp)

    first = run_fetch(settings, ["gleam"])
    assert [r.name for r in first.sources[0].fetched] == ["E_2020_GLEAM_v3.7a.nc", "E_2021_GLEAM_v3.7a.nc"]
    for name in GLEAM_FILES:
        assert (settings.folder("landing") / "gleam" / name.rsplit("/", 1)[-1]).read_bytes() == data[name]
    assert landing_names(settings, "gleam") == ["E_2020_GLEAM_v3.7a.nc", "E_2021_GLEAM_v3.7a.nc"]

    # second run: nothing new, nothing downloaded
    assert run_fetch(settings, ["gleam"]).sources[0].planned == []

    # a new year and a new version appear upstream; an old file is unchanged
    make_files(upstream, ["data/v3.7a/daily/2022/E_2022_GLEAM_v3.7a.nc", "data/v4.2a/daily/2021/E_2021_GLEAM_v4.2a.nc"])
    third = run_fetch(settings, ["gleam"])
    assert sorted(r.name for r in third.sources[0].fetched) == ["E_2021_GLEAM_v4.2a.nc", "E_2022_GLEAM_v3.7a.nc"]

    # --since/--until keep the years in range only
    (upstream / "data/v4.2a/daily/2023").mkdir(parents=True)
    make_files(upstream, ["data/v4.2a/daily/2023/E_2023_GLEAM_v4.2a.nc", "data/v4.2a/daily/2019/E_2019_GLEAM_v4.2a.nc"])
    from datetime import date
    ranged = run_fetch(settings, ["gleam"], since=date(2023, 1, 1), until=date(2023, 12, 31))
    assert [r.name for r in ranged.sources[0].fetched] == ["E_2023_GLEAM_v4.2a.nc"]

    rows = FetchLedger.of(settings).rows("gleam")
    assert len(rows) == 5 and all(r.origin.startswith(f"sftp://127.0.0.1:{sftp.port}/data/") for r in rows)
    assert all(len(r.sha256) == 64 and r.size > 0 for r in rows)
    # upstream untouched
    assert (upstream / GLEAM_FILES[0]).read_bytes() == data[GLEAM_FILES[0]]


def test_changed_upstream_file_is_fetched_again(tmp_path, monkeypatch, upstream, sftp):
    make_files(upstream, GLEAM_FILES[:1])
    settings = gleam_settings(tmp_path, monkeypatch, sftp)
    run_fetch(settings, ["gleam"])
    new = os.urandom(123_456)
    (upstream / GLEAM_FILES[0]).write_bytes(new)                     # the provider republishes the year
    again = run_fetch(settings, ["gleam"])
    assert [r.name for r in again.sources[0].fetched] == ["E_2020_GLEAM_v3.7a.nc"]
    assert (settings.folder("landing") / "gleam" / "E_2020_GLEAM_v3.7a.nc").read_bytes() == new


def test_connection_cut_mid_file_is_resumed(tmp_path, monkeypatch, upstream, sftp, faults, caplog):
    data = make_files(upstream, GLEAM_FILES[:1])
    faults.cut["E_2020_GLEAM_v3.7a.nc"] = 1
    settings = gleam_settings(tmp_path, monkeypatch, sftp)
    with caplog.at_level("INFO", logger="etfuse.fetch"):
        report = run_fetch(settings, ["gleam"])
    resumed = [r.getMessage() for r in caplog.records if "resuming" in r.getMessage()]
    assert len(resumed) == 1 and int(resumed[0].rsplit(" ", 1)[1]) >= 150_000   # continued, not restarted
    assert report.sources[0].error is None
    assert faults.cut["E_2020_GLEAM_v3.7a.nc"] == 0                   # the cut happened
    assert (settings.folder("landing") / "gleam" / "E_2020_GLEAM_v3.7a.nc").read_bytes() == data[GLEAM_FILES[0]]
    assert landing_names(settings, "gleam") == ["E_2020_GLEAM_v3.7a.nc"]   # no partial left


def test_truncated_file_never_reaches_landing(tmp_path, monkeypatch, upstream, sftp, faults):
    make_files(upstream, GLEAM_FILES[:1])
    faults.truncate.add("E_2020_GLEAM_v3.7a.nc")
    settings = gleam_settings(tmp_path, monkeypatch, sftp)
    report = run_fetch(settings, ["gleam"])
    source = report.sources[0]
    assert source.error_kind == "transfer_failed" and "expected 300000" in source.error
    names = landing_names(settings, "gleam")
    assert names == [".E_2020_GLEAM_v3.7a.nc.part", ".E_2020_GLEAM_v3.7a.nc.part.json"]   # hidden, kept to resume
    assert FetchLedger.of(settings).rows("gleam") == []
    assert [a["kind"] for a in alerts(settings)] == ["fetch_failed"]
    # ingest would skip the partial (hidden)
    from etfuse.ingest import discover
    files, skipped = discover(settings)
    assert files == [] and any("hidden" in s for s in skipped)
    # the provider fixes the file: the next run completes it
    faults.truncate.clear()
    assert run_fetch(settings, ["gleam"]).sources[0].error is None
    assert landing_names(settings, "gleam") == ["E_2020_GLEAM_v3.7a.nc"]


def test_wrong_credentials_are_a_clear_error_and_never_shown(tmp_path, monkeypatch, upstream, sftp):
    make_files(upstream, GLEAM_FILES[:1])
    monkeypatch.setenv("GLEAM_SFTP_PASSWORD", "wrong-password-123")
    settings = gleam_settings(tmp_path, monkeypatch, sftp)
    report = run_fetch(settings, ["gleam"])
    source = report.sources[0]
    assert source.error_kind == "credentials"
    assert "user name and password" in source.error
    text = (settings.folder("alerts") / "alerts.jsonl").read_text() + str(report.to_json())
    assert "wrong-password-123" not in text and PASSWORD not in text
    assert landing_names(settings, "gleam") == []
    assert alerts(settings)[0]["severity"] == "critical"


def test_stalling_server_times_out(tmp_path, monkeypatch, upstream, sftp, faults):
    make_files(upstream, GLEAM_FILES[:1])
    faults.stall.add("E_2020_GLEAM_v3.7a.nc")
    settings = gleam_settings(tmp_path, monkeypatch, sftp, retries=1, timeout_s=0.5)
    import time
    t0 = time.monotonic()
    report = run_fetch(settings, ["gleam"])
    assert time.monotonic() - t0 < 15
    assert report.sources[0].error_kind == "transfer_failed" and "stalled" in report.sources[0].error
    assert not (settings.folder("landing") / "gleam" / "E_2020_GLEAM_v3.7a.nc").exists()


def test_partial_left_by_a_crash_is_resumed_or_restarted(tmp_path, monkeypatch, upstream, sftp):
    data = make_files(upstream, GLEAM_FILES[:1])
    name = "E_2020_GLEAM_v3.7a.nc"
    settings = gleam_settings(tmp_path, monkeypatch, sftp)
    plan = run_fetch(settings, ["gleam"], dry_run=True).sources[0].planned
    assert [i.name for i in plan] == [name] and landing_names(settings, "gleam") == []
    folder = settings.folder("landing") / "gleam"
    folder.mkdir(parents=True)
    partial, marker = partial_paths(folder, name)

    # a crash after 100 kB of the same upstream version: continued from there
    import json
    partial.write_bytes(data[GLEAM_FILES[0]][:100_000])
    marker.write_text(json.dumps({"origin": plan[0].origin, "version": plan[0].version}))
    run_fetch(settings, ["gleam"])
    assert (folder / name).read_bytes() == data[GLEAM_FILES[0]]
    assert landing_names(settings, "gleam") == [name]

    # a partial of another upstream version (garbage) is never continued: started over
    (folder / name).unlink()
    new = os.urandom(200_000)
    (upstream / GLEAM_FILES[0]).write_bytes(new)
    plan = run_fetch(settings, ["gleam"], dry_run=True).sources[0].planned
    partial.write_bytes(b"x" * 50_000)
    marker.write_text(json.dumps({"origin": plan[0].origin, "version": "size=1;mtime=old"}))
    run_fetch(settings, ["gleam"])
    assert (folder / name).read_bytes() == new


def test_remote_sftp_with_pattern_into_cma(tmp_path, monkeypatch, upstream, sftp):
    data = make_files(upstream, ["drop/evp_202101.txt", "drop/evp_202102.txt", "drop/notes.doc", "drop/sub/evp_2019.txt"])
    settings = make_settings(tmp_path, monkeypatch, remote={"enabled": True, "url": f"{sftp.url}/drop",
                                                            "pattern": "evp_*.txt", "target": "cma",
                                                            "known_hosts": str(sftp.known_hosts), **FAST})
    report = run_fetch(settings)                                  # enabled sources only: remote
    assert [s.source for s in report.sources] == ["remote"]
    assert landing_names(settings, "cma") == ["evp_202101.txt", "evp_202102.txt"]
    assert (settings.folder("landing") / "cma" / "evp_202101.txt").read_bytes() == data["drop/evp_202101.txt"]
    assert run_fetch(settings).sources[0].planned == []


def test_unknown_host_key_is_refused(tmp_path, monkeypatch, upstream, sftp):
    make_files(upstream, GLEAM_FILES[:1])
    other = tmp_path / "other_known_hosts"
    other.write_text("")
    settings = make_settings(tmp_path, monkeypatch, gleam={"enabled": True, "url": sftp.url, "known_hosts": str(other),
                                                           **FAST})
    report = run_fetch(settings, ["gleam"])
    assert report.sources[0].error_kind in ("configuration", "credentials", "provider_down")
    assert landing_names(settings, "gleam") == []


def test_missing_known_hosts_is_a_configuration_error(tmp_path, monkeypatch, upstream, sftp):
    settings = make_settings(tmp_path, monkeypatch, gleam={"enabled": True, "url": sftp.url,
                                                           "known_hosts": str(tmp_path / "absent"), **FAST})
    report = run_fetch(settings, ["gleam"])
    assert report.sources[0].error_kind == "configuration" and "ssh-keyscan" in report.sources[0].error


@pytest.mark.parametrize("missing", ["url"])
def test_missing_url_is_a_configuration_error(tmp_path, monkeypatch, missing):
    settings = make_settings(tmp_path, monkeypatch, gleam={"enabled": True})
    report = run_fetch(settings, ["gleam"])
    assert report.sources[0].error_kind == "configuration" and "fetch.gleam.url" in report.sources[0].error
