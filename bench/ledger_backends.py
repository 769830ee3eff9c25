"""Per-call cost of the product ledger on SQLite and on PostgreSQL (etfuse/ledgerdb.py).

Starts a throw-away PostgreSQL 15 on loopback (tests/services.py), writes 20 product days of the
test region into a product store on each backend, then times the ledger reads the API makes:
``record(day)``, ``history(day)`` and ``records()`` when its cache is valid (the cache check itself
is a query in PostgreSQL, a file stat in SQLite).  Medians of 200 / 100 / 100 calls; write_day is the
mean of the 20 writes (file + ledger).  Prints only.

    python bench/ledger_backends.py
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from etfuse.settings import load_settings
from serving.product import ProductStore
from tests import services
from tests.serving.test_product import field, write


def median_ms(fn, n: int) -> float:
    """Median wall time of ``n`` calls of ``fn`` [ms]."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out) * 1e3


def measure(url: str | None) -> tuple[float, float, float, float]:
    """(record, history(day), cached records(), mean write_day) [ms] on one backend."""
    home = Path(tempfile.mkdtemp(prefix="etfuse-ledger-bench-"))
    try:
        settings = load_settings(home=home, region="test", serving={"quicklooks": False}, ledger={"url": url})
        store = ProductStore(settings)
        values = field(store.grid.shape, 1)
        t = time.perf_counter()
        for d in range(20):
            write(store, f"2021-07-{d + 1:02d}", values)
        write_ms = (time.perf_counter() - t) / 20 * 1e3
        return (median_ms(lambda: store.record("2021-07-05"), 200), median_ms(lambda: store.history("2021-07-05"), 100),
                median_ms(store.records, 100), write_ms)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    reason = services.postgres_missing()
    if reason:
        raise SystemExit(reason)
    with services.postgres_cluster("bench") as url:
        res = {"sqlite": measure(None), "postgresql": measure(url)}
    for name, v in res.items():
        print(f"{name:10s} record {v[0]:.2f} ms  history(day) {v[1]:.2f} ms  records() cached {v[2]:.2f} ms  "
              f"write_day {v[3]:.1f} ms")
    print("ratio postgresql/sqlite: record %.2f  history %.2f  records %.1f  write_day %.2f"
          % tuple(res["postgresql"][i] / res["sqlite"][i] for i in range(4)))


if __name__ == "__main__":
    main()
