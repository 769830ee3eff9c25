"""SQLite ledgers, opened one way: the harmonised store's and the product's ``ledger.sqlite``
(``wal_transaction`` for their stores, ``read_only_rows`` for readers that must never write).

WAL mode lets readers (the API, metrics) read while a writer commits; each ``with`` block is one
transaction (committed when it ends, rolled back on an exception) and the connection is closed
after it, so no handle outlives a fork or a thread.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["wal_transaction", "read_only_rows"]

log = logging.getLogger(__name__)


@contextmanager
def wal_transaction(path: Path, *, timeout: float = 60.0) -> Iterator[sqlite3.Connection]:
    """One transaction on the SQLite file ``path`` in WAL mode; waits up to ``timeout`` [s] for a lock."""
    db = sqlite3.connect(path, timeout=timeout)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        with db:
            yield db
    finally:
        db.close()


def read_only_rows(path: Path, query: str, params: tuple = ()) -> list[tuple]:
    """Rows of ``query`` on the SQLite file ``path`` opened read-only: nothing is created or locked
    for writing, so a reader such as the metrics endpoint can never block a writer.  Empty when the
    file is absent or cannot answer (e.g. no such table yet; a warning says why)."""
    if not Path(path).exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute(query, params).fetchall()
    except sqlite3.DatabaseError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return []
    finally:
        db.close()
