"""Product days computed by a 2-worker Dask cluster (processes, one thread each) whose ledgers are
in PostgreSQL: the workers share no SQLite file, no ``*.sqlite`` ledger is made, and every day is in
the product ledger exactly once (with one ``written`` history row)."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from serving.product import ProductStore
from tests.standins import export_small_model

DAYS = pd.date_range("2021-06-20", "2021-06-25")


def compute_chunk(settings, model_file: str, start: str, end: str) -> dict:
    """One backfill chunk in a worker, as flows/backfill.py's backfill_chunk runs it."""
    from serving.predictor import Predictor
    from serving.update import run_update
    product = ProductStore(settings, reconcile=False)
    predictor = Predictor(settings, model_path=model_file, model_version=1)
    report = run_update(settings, predictor=predictor, product=product, start=start, end=end,
                        build_years=False, lock=False)
    return {"written": report.written, "pid": os.getpid()}


@pytest.mark.slow
def test_two_dask_workers_share_a_postgresql_ledger(small_settings, small_world, ledger_postgres, tmp_path):
    from distributed import Client, LocalCluster

    from etfuse.harmonise import harmonise_into_store
    from etfuse.ledgerdb import schema_name
    from etfuse.store import HarmonisedStore
    from flows.backfill import chunks
    settings = small_settings.model_copy(update={
        "static": small_settings.static.model_copy(update={"elevation_file": small_world / "static" / "elevation.nc"}),
        "serving": small_settings.serving.model_copy(update={"quicklooks": False, "threads": 1}),
        "ledger": small_settings.ledger.model_copy(update={"url": ledger_postgres})})
    store = HarmonisedStore.of(settings)
    for source in ("era5land", "modis"):
        for path in sorted((small_world / "landing" / source).glob("*")):
            harmonise_into_store(source, path, store, settings=settings)
    model_file = str(export_small_model(tmp_path / "model"))
    pieces = chunks(list(DAYS), size=3, workers=2)
    assert len(pieces) == 2
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        workers = sorted(client.scheduler_info()["workers"])
        assert len(workers) == 2
        futures = [client.submit(compute_chunk, settings, model_file, f"{a}", f"{b}", pure=False, workers=[w])
                   for (a, b), w in zip(pieces, workers)]                 # one chunk on each worker
        results = [f.result(timeout=300) for f in futures]
    assert len({r["pid"] for r in results} | {os.getpid()}) == 3          # two worker processes, not this one
    assert sorted(d for r in results for d in r["written"]) == [f"{d:%Y-%m-%d}" for d in DAYS]
    for root in (settings.harmonised, settings.folder("product")):
        assert sorted(root.rglob("*.sqlite*")) == []
    import psycopg2
    with psycopg2.connect(ledger_postgres) as db, db.cursor() as cur:
        schema = schema_name("product", settings.folder("product"))
        cur.execute(f'SELECT day, COUNT(*) FROM "{schema}".days GROUP BY day ORDER BY day')
        assert cur.fetchall() == [(f"{d:%Y-%m-%d}", 1) for d in DAYS]
        cur.execute(f'SELECT day, COUNT(*) FROM "{schema}".history WHERE action=%s GROUP BY day ORDER BY day',
                    ("written",))
        assert cur.fetchall() == [(f"{d:%Y-%m-%d}", 1) for d in DAYS]
    product = ProductStore(settings)
    assert product.last_reconcile.clean
    assert [r.day for r in product.records()] == list(DAYS)
    assert all(product.day_path(d).exists() for d in DAYS)
