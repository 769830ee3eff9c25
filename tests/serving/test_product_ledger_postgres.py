"""The product ledger on PostgreSQL: test_product.py's ledger tests run again with ``ledger.url``
set to a real PostgreSQL 15 on loopback (write, read back, replace, history, yearly file, reconcile),
and no ``ledger.sqlite`` is made."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from etfuse import ledgerdb
from serving.product import ProductStore
from tests.serving import test_product

STORE_TESTS = ["test_round_trip_values_fill_and_precision", "test_same_fingerprint_and_model_is_unchanged",
               "test_different_fingerprint_or_model_replaces_the_day", "test_provisional_day_becomes_final",
               "test_same_key_with_other_status_is_replaced_and_downgrade_is_refused",
               "test_yearly_file_equals_the_daily_files"]


@pytest.fixture
def pg_settings(settings, ledger_postgres):
    """test_product.py's settings (no quicklooks) with the ledger in PostgreSQL."""
    return settings.model_copy(update={"serving": settings.serving.model_copy(update={"quicklooks": False}),
                                       "ledger": settings.ledger.model_copy(update={"url": ledger_postgres})})


@pytest.mark.parametrize("name", STORE_TESTS)
def test_product_ledger_tests_pass_on_postgresql(name, pg_settings):
    store = ProductStore(pg_settings)
    getattr(test_product, name)(store)
    assert not (store.root / "ledger.sqlite").exists()


def test_reconcile_on_postgresql(pg_settings, ledger_postgres, monkeypatch):
    """The reconcile test, its ledger edit made in PostgreSQL instead of the SQLite file."""
    def connect(path):
        return ledgerdb.transaction(ledger_postgres, Path(path), ledgerdb.schema_name("product", Path(path).parent))
    monkeypatch.setattr(test_product, "sqlite3", types.SimpleNamespace(connect=connect))
    test_product.test_reconcile_adds_updates_removes_and_moves_corrupt_files(pg_settings)
    assert not (pg_settings.folder("product") / "ledger.sqlite").exists()


def test_records_cache_follows_commits_of_other_processes(pg_settings):
    """records() is cached until the ledger changes; in PostgreSQL another node's write must show."""
    mine, other = ProductStore(pg_settings), ProductStore(pg_settings, reconcile=False)
    values = test_product.field(mine.grid.shape, 3)
    test_product.write(mine, "2021-07-01", values)
    assert [r.day.strftime("%F") for r in mine.records()] == ["2021-07-01"]
    test_product.write(other, "2021-07-02", values)
    assert [r.day.strftime("%F") for r in mine.records()] == ["2021-07-01", "2021-07-02"]
    test_product.write(other, "2021-07-02", values, key="b")
    assert mine.records()[-1].fingerprint == test_product.fp("b")
