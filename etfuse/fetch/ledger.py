"""The fetch ledger: what was fetched, when, from where, and its checksum.

One SQLite file, ``$ETFUSE_HOME/fetch/ledger.sqlite``.  A row is written only after the file has
been renamed into ``landing/``, so the ledger never claims a file that is not there; a crash
between the rename and the row leaves a landing file that the next run downloads once more and
that ingest recognises as a byte-identical duplicate.  ``(source, origin, version)`` is unique:
an unchanged upstream file (same origin and version: size and modification time, ETag, or the
ERA5 stream) is never downloaded twice.  The ledger also keeps every run, so "nothing fetched
for N days" can be told from "never run".
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from etfuse.clock import utcnow_iso
from etfuse.settings import Settings

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fetched (
    source TEXT NOT NULL, origin TEXT NOT NULL, version TEXT NOT NULL,
    name TEXT NOT NULL, target TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    checksum TEXT, fetched_at TEXT NOT NULL, provisional INTEGER NOT NULL DEFAULT 0,
    days TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (source, origin, version));
CREATE TABLE IF NOT EXISTS runs (
    source TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
    fetched INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, error TEXT);
"""


@dataclass(frozen=True)
class LedgerRow:
    source: str
    origin: str
    version: str
    name: str
    target: str
    size: int
    sha256: str
    checksum: str | None
    fetched_at: str
    provisional: bool
    days: tuple[str, ...]


class FetchLedger:
    """The ledger of one runtime root (``settings.folder("fetch") / "ledger.sqlite"``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)

    @classmethod
    def of(cls, settings: Settings) -> "FetchLedger":
        return cls(settings.folder("fetch") / "ledger.sqlite")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    def has(self, source: str, origin: str, version: str) -> bool:
        with self._db() as db:
            row = db.execute("SELECT 1 FROM fetched WHERE source=? AND origin=? AND version=?",
                             (source, origin, version)).fetchone()
        return row is not None

    def record(self, row: LedgerRow) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO fetched VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (row.source, row.origin, row.version, row.name, row.target, row.size, row.sha256,
                        row.checksum, row.fetched_at, int(row.provisional), json.dumps(list(row.days))))

    def rows(self, source: str | None = None) -> list[LedgerRow]:
        query = "SELECT * FROM fetched" + (" WHERE source=?" if source else "") + " ORDER BY fetched_at, name"
        with self._db() as db:
            found = db.execute(query, (source,) if source else ()).fetchall()
        return [LedgerRow(*r[:9], bool(r[9]), tuple(json.loads(r[10]))) for r in found]

    def last_fetched_at(self, source: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT MAX(fetched_at) FROM fetched WHERE source=?", (source,)).fetchone()
        return row[0] if row else None

    def first_run_at(self, source: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT MIN(started_at) FROM runs WHERE source=?", (source,)).fetchone()
        return row[0] if row else None

    def start_run(self, source: str) -> int:
        with self._db() as db:
            return int(db.execute("INSERT INTO runs (source, started_at) VALUES (?, ?)",
                                  (source, utcnow_iso())).lastrowid)

    def finish_run(self, run_id: int, *, fetched: int, failed: int, error: str | None) -> None:
        with self._db() as db:
            db.execute("UPDATE runs SET finished_at=?, fetched=?, failed=?, error=? WHERE rowid=?",
                       (utcnow_iso(), fetched, failed, error, run_id))
