"""The ledgers on PostgreSQL (etfuse/ledgerdb.py): the harmonised store's tests of test_store.py
run again with the ledger in a real PostgreSQL 15 on loopback, the SQL translation, one schema per
ledger and root, and the URL kept out of errors."""

from __future__ import annotations

import functools

import pandas as pd
import psycopg2
import pytest

from etfuse import ledgerdb
from etfuse.store import HarmonisedStore
from tests.etfuse import test_store

#: test_store.py's ledger tests (all but the SQLite-file crash test, which has its own below)
STORE_TESTS = ["test_same_day_twice_stores_once", "test_changed_day_is_a_revision_and_the_old_version_is_kept",
               "test_new_variables_extend_a_day_and_incomplete_ones_are_not_stored",
               "test_a_different_grid_must_replace_everything", "test_stations_idempotent_with_revisions_and_history",
               "test_read_stations_filters_and_missing", "test_summary",
               "test_latest_grid_versions_gives_the_newest_revision_of_each_day_in_the_window"]


@pytest.mark.parametrize("name", STORE_TESTS)
def test_store_ledger_tests_pass_on_postgresql(name, ledger_postgres, tmp_path, monkeypatch):
    monkeypatch.setattr(test_store, "HarmonisedStore", functools.partial(HarmonisedStore, ledger_url=ledger_postgres))
    getattr(test_store, name)(tmp_path)
    assert not (tmp_path / "ledger.sqlite").exists()
    with psycopg2.connect(ledger_postgres) as db, db.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema=%s",
                    (ledgerdb.schema_name("store", tmp_path),))
        assert cur.fetchone()[0] == 5


def test_deliveries_reprocess_and_revisions_on_postgresql(ledger_postgres, tmp_path):
    store = HarmonisedStore(tmp_path, ledger_url=ledger_postgres)
    for status in ("quarantined", "accepted"):       # INSERT OR REPLACE: one row, the last status
        store.record_delivery(sha256="ab" * 32, file_name="f.nc", source="gleam", status=status, kept_as="x",
                              days=["2021-03-01"], detail={"n": 1})
    assert store.delivery("ab" * 32)["status"] == "accepted"
    assert store.delivery("ab" * 32)["days"] == ["2021-03-01"]
    assert len(store.deliveries()) == 1
    store.mark_reprocess(["2021-03-01", "2021-03-02"], source="gleam", reason="revised")
    store.mark_reprocess(["2021-03-01"], source="gleam", reason="revised")     # same second: ignored
    assert list(store.pending_reprocess()["day"]) == ["2021-03-01", "2021-03-02"]
    store.reprocess_done(["2021-03-01"])
    assert list(store.pending_reprocess()["day"]) == ["2021-03-02"]
    from etfuse.store_ledger import delivery_counts
    assert delivery_counts(tmp_path, ledger_postgres) == [("gleam", "accepted", 1)]
    assert delivery_counts(tmp_path / "elsewhere", ledger_postgres) == []      # nothing created by a reader
    store.put_grid("gleam", test_store.grid_ds(value=1.0))
    store.put_grid("gleam", test_store.grid_ds(value=2.0))
    revised = store.revisions("gleam")
    assert list(revised["day"]) == ["2021-03-01", "2021-03-02"] and set(revised["revision"]) == {1}
    assert set(store.first_stored("gleam")) == {pd.Timestamp("2021-03-01"), pd.Timestamp("2021-03-02")}


def test_two_roots_and_two_kinds_never_share_a_schema(ledger_postgres, tmp_path):
    a = HarmonisedStore(tmp_path / "a", ledger_url=ledger_postgres)
    b = HarmonisedStore(tmp_path / "b", ledger_url=ledger_postgres)
    a.record_delivery(sha256="cd" * 32, file_name="g.nc", source="era5land", status="accepted", kept_as=None)
    assert len(a.deliveries()) == 1 and b.deliveries().empty
    assert len({ledgerdb.schema_name("store", tmp_path / "a"), ledgerdb.schema_name("store", tmp_path / "b"),
                ledgerdb.schema_name("product", tmp_path / "a")}) == 3


def test_translation_of_the_sqlite_dialect():
    conn = ledgerdb._PgConnection(raw=None, schema="s")
    conn._keys["days"] = (["day", "fingerprint", "status"], ["day"])
    assert conn.translate("SELECT a FROM t WHERE b=? AND c LIKE 'x%'") == "SELECT a FROM t WHERE b=%s AND c LIKE 'x%%'"
    assert conn.translate("INSERT OR IGNORE INTO reprocess VALUES (?,?)") == \
        "INSERT INTO reprocess VALUES (%s,%s) ON CONFLICT DO NOTHING"
    assert conn.translate("INSERT OR REPLACE INTO days VALUES (?,?,?)") == (
        "INSERT INTO days VALUES (%s,%s,%s) ON CONFLICT (day) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
        "status = EXCLUDED.status")


def test_a_bad_url_never_shows_its_password(tmp_path):
    url = "postgresql://etfuse:change-me-7f3k@127.0.0.1:1/etfuse"
    with pytest.raises(ledgerdb.LedgerDatabaseError) as info:
        HarmonisedStore(tmp_path, ledger_url=url)
    assert "change-me-7f3k" not in str(info.value) and "cannot connect" in str(info.value)
    from etfuse.settings import load_settings
    with pytest.raises(Exception) as bad:
        load_settings(home=tmp_path, ledger={"url": "mysql://u:change-me-7f3k@h/db"})
    assert "change-me-7f3k" not in str(bad.value)
    settings = load_settings(home=tmp_path, ledger={"url": url})
    assert "change-me-7f3k" not in repr(settings) and "change-me-7f3k" not in str(settings.model_dump())


def test_an_embedded_ledger_moves_into_postgresql_and_back_is_refused(ledger_postgres, tmp_path):
    """A store that ran on SQLite keeps everything when ledger.url is set: its rows are copied into
    PostgreSQL once, the file is renamed, and opening it again without the URL is refused."""
    sqlite_store = HarmonisedStore(tmp_path)
    sqlite_store.put_grid("gleam", test_store.grid_ds(value=1.0))
    sqlite_store.put_grid("gleam", test_store.grid_ds(value=2.0))
    sqlite_store.put_stations("cma", test_store.station_ds())
    before = (sqlite_store.revisions(), sqlite_store.read_stations())
    moved = HarmonisedStore(tmp_path, ledger_url=ledger_postgres)
    assert not (tmp_path / "ledger.sqlite").exists() and (tmp_path / "ledger.sqlite.moved-to-postgresql").exists()
    pd.testing.assert_frame_equal(moved.revisions(), before[0])
    pd.testing.assert_frame_equal(moved.read_stations(), before[1])
    again = HarmonisedStore(tmp_path, ledger_url=ledger_postgres)          # nothing copied twice
    assert len(again.revisions()) == len(before[0])
    with pytest.raises(ledgerdb.LedgerDatabaseError, match="ledger.url is not set"):
        HarmonisedStore(tmp_path)
    assert not (tmp_path / "ledger.sqlite").exists()
