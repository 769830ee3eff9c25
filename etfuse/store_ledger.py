"""The harmonised store's ledger, ``ledger.sqlite`` (or a PostgreSQL schema with ``ledger.url``,
etfuse/ledgerdb.py): what arrived when, from which file, every revision of a grid day, station
observations, deliveries and days to reprocess.

StoreLedger is a mixin of etfuse.store.HarmonisedStore (it uses the store's ``root`` and
``grid_days``); the queries other layers need are methods here, so no one else reads the tables.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import pandas as pd

from etfuse.clock import utcnow
from etfuse.ledgerdb import read_frame, read_rows, schema_name, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS grid_versions (
    source TEXT NOT NULL, day TEXT NOT NULL, variable TEXT NOT NULL, revision INTEGER NOT NULL,
    sha256 TEXT NOT NULL, stream TEXT, action TEXT NOT NULL,
    file_name TEXT, file_sha256 TEXT, stored_at TEXT NOT NULL,
    PRIMARY KEY (source, day, variable, revision));
CREATE TABLE IF NOT EXISTS station_obs (
    source TEXT NOT NULL, station_id TEXT NOT NULL, day TEXT NOT NULL,
    et_mm REAL, lat REAL NOT NULL, lon REAL NOT NULL, elevation_m REAL, extras TEXT,
    sha256 TEXT NOT NULL, revision INTEGER NOT NULL, file_name TEXT, file_sha256 TEXT, stored_at TEXT NOT NULL,
    PRIMARY KEY (source, station_id, day));
CREATE TABLE IF NOT EXISTS station_obs_history (
    source TEXT NOT NULL, station_id TEXT NOT NULL, day TEXT NOT NULL,
    et_mm REAL, lat REAL, lon REAL, elevation_m REAL, extras TEXT,
    sha256 TEXT NOT NULL, revision INTEGER NOT NULL, file_name TEXT, file_sha256 TEXT, stored_at TEXT NOT NULL,
    superseded_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS station_obs_day ON station_obs (source, day);
CREATE TABLE IF NOT EXISTS deliveries (
    sha256 TEXT NOT NULL, file_name TEXT NOT NULL, source TEXT NOT NULL, status TEXT NOT NULL,
    kept_as TEXT, days TEXT, detail TEXT, processed_at TEXT NOT NULL,
    PRIMARY KEY (sha256, file_name, source));
CREATE TABLE IF NOT EXISTS reprocess (
    day TEXT NOT NULL, source TEXT NOT NULL, reason TEXT NOT NULL, marked_at TEXT NOT NULL, done_at TEXT,
    PRIMARY KEY (day, source, reason, marked_at));
"""


def _now() -> str:
    """The ledger's time stamps: ``2021-06-01T10:00:00+00:00`` (whole seconds)."""
    return utcnow().isoformat(timespec="seconds")


def delivery_counts(root: Path, ledger_url: str | None = None) -> list[tuple[str, str, int]]:
    """(source, status, number of files) of every delivery recorded under the harmonised store
    ``root``, read without opening the store (nothing is created; [] before the first ingest)."""
    return read_rows(ledger_url, Path(root) / "ledger.sqlite", schema_name("store", root),
                     "SELECT source, status, COUNT(*) FROM deliveries GROUP BY source, status")


class StoreLedger:
    """Mixin of HarmonisedStore: the ledger connection and its queries (``ledger_url``: the
    PostgreSQL ledger, None = ``ledger.sqlite``; see etfuse/ledgerdb.py)."""

    ledger_url: str | None = None

    def _db(self) -> AbstractContextManager:
        return transaction(self.ledger_url, self.root / "ledger.sqlite", schema_name("store", self.root))

    def first_stored(self, source: str, *, since: datetime | None = None) -> dict[pd.Timestamp, datetime]:
        """Per day of a gridded source, when its first version was stored (UTC); with ``since``, only
        days that got a version at or after it."""
        query = "SELECT day, MIN(stored_at) FROM grid_versions WHERE source=?"
        args: list = [source]
        if since is not None:
            query += " AND day IN (SELECT day FROM grid_versions WHERE source=? AND stored_at >= ?)"
            args += [source, since.astimezone(timezone.utc).isoformat(timespec="seconds")]
        with self._db() as db:
            rows = db.execute(query + " GROUP BY day", args).fetchall()
        return {pd.Timestamp(d): datetime.fromisoformat(t) for d, t in rows}


    def latest_grid_versions(self, first: pd.Timestamp, last: pd.Timestamp) -> dict[tuple[str, str], dict]:
        """The newest revision of every stored grid variable of the days [first, last], every source:
        ``{(source, "YYYY-MM-DD"): {variable: (content sha256, ERA5 stream or None)}}``.

        What a product day was computed from is fingerprinted with these hashes, so a revised
        input (a new revision) makes the product day stale (serving/update.py).
        """
        query = ("SELECT g.source, g.day, g.variable, g.sha256, g.stream FROM grid_versions g JOIN "
                 "(SELECT source, day, variable, MAX(revision) AS r FROM grid_versions WHERE day BETWEEN ? AND ? "
                 "GROUP BY source, day, variable) m ON g.source = m.source AND g.day = m.day "
                 "AND g.variable = m.variable AND g.revision = m.r")
        out: dict[tuple[str, str], dict] = {}
        with self._db() as db:
            for source, day, variable, sha, stream in db.execute(query, (f"{first:%Y-%m-%d}", f"{last:%Y-%m-%d}")):
                out.setdefault((source, day), {})[variable] = (sha, stream)
        return out

    # ------------------------------------------------------------------ deliveries and reprocessing
    def record_delivery(self, *, sha256: str, file_name: str, source: str, status: str, kept_as: str | None,
                        days: Sequence[str] = (), detail: dict | None = None) -> None:
        """What became of one provider file: accepted (archived), quarantined, duplicate, released."""
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO deliveries VALUES (?,?,?,?,?,?,?,?)",
                       (sha256, file_name, source, status, kept_as, json.dumps(list(days)),
                        json.dumps(detail or {}, default=str), _now()))

    def delivery(self, sha256: str, source: str | None = None) -> dict | None:
        """The latest record of a file with this content (any name), or None."""
        query = "SELECT sha256, file_name, source, status, kept_as, days, detail, processed_at FROM deliveries WHERE sha256=?"
        args: list = [sha256]
        if source:
            query += " AND source=?"
            args.append(source)
        with self._db() as db:
            row = db.execute(query + " ORDER BY processed_at DESC LIMIT 1", args).fetchone()
        if row is None:
            return None
        keys = ("sha256", "file_name", "source", "status", "kept_as", "days", "detail", "processed_at")
        rec = dict(zip(keys, row))
        rec["days"], rec["detail"] = json.loads(rec["days"]), json.loads(rec["detail"])
        return rec

    def deliveries(self) -> pd.DataFrame:
        with self._db() as db:
            return read_frame(db, "SELECT * FROM deliveries ORDER BY processed_at")

    def mark_reprocess(self, days: Sequence[str | pd.Timestamp], *, source: str, reason: str) -> None:
        """Product days whose inputs changed (a revision) and must be computed again."""
        now = _now()
        with self._db() as db:
            db.executemany("INSERT OR IGNORE INTO reprocess VALUES (?,?,?,?,NULL)",
                           [(f"{pd.Timestamp(d):%Y-%m-%d}", source, reason, now) for d in days])

    def pending_reprocess(self) -> pd.DataFrame:
        with self._db() as db:
            return read_frame(db, "SELECT day, source, reason, marked_at FROM reprocess WHERE done_at IS NULL "
                                  "ORDER BY day")

    def reprocess_done(self, days: Sequence[str | pd.Timestamp]) -> None:
        now = _now()
        with self._db() as db:
            db.executemany("UPDATE reprocess SET done_at=? WHERE day=? AND done_at IS NULL",
                           [(now, f"{pd.Timestamp(d):%Y-%m-%d}") for d in days])

    # ------------------------------------------------------------------ history and summary
    def revisions(self, source: str | None = None) -> pd.DataFrame:
        """Every revised grid variable and station row, with both versions' files and times."""
        with self._db() as db:
            grid = read_frame(
                db, "SELECT source, day, variable AS item, revision, stream, file_name, file_sha256, stored_at "
                "FROM grid_versions WHERE action='revised'" + (" AND source=?" if source else ""),
                [source] if source else [])
            stations = read_frame(
                db, "SELECT source, day, station_id AS item, revision, NULL AS stream, file_name, file_sha256, stored_at "
                "FROM station_obs WHERE revision > 0" + (" AND source=?" if source else ""),
                [source] if source else [])
        return pd.concat([grid, stations], ignore_index=True).sort_values(["source", "day", "item"]).reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """One row per source: kind, first and last day, number of days (and stations)."""
        rows = []
        grids = self.root / "grids"
        for folder in sorted(p for p in grids.iterdir() if p.is_dir()) if grids.exists() else []:
            days = self.grid_days(folder.name)
            if days:
                rows.append({"source": folder.name, "kind": "grid", "first_day": days[0].date(),
                             "last_day": days[-1].date(), "days": len(days), "stations": None})
        with self._db() as db:
            for source, first, last, n_days, n_st, n_obs in db.execute(
                    "SELECT source, MIN(day), MAX(day), COUNT(DISTINCT day), COUNT(DISTINCT station_id), "
                    "COUNT(et_mm) FROM station_obs GROUP BY source"):
                rows.append({"source": source, "kind": "stations", "first_day": pd.Timestamp(first).date(),
                             "last_day": pd.Timestamp(last).date(), "days": n_days, "stations": n_st,
                             "observations": n_obs})
        return pd.DataFrame(rows)

