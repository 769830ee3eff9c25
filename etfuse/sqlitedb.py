"""SQLite ledgers, opened one way: the harmonised store's and the product's ``ledger.sqlite``.

WAL mode lets readers (the API, metrics) read while a writer commits; each ``with`` block is one
transaction (committed when it ends, rolled back on an exception) and the connection is closed
after it, so no handle outlives a fork or a thread.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["wal_transaction"]


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
