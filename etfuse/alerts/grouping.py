"""Grouping repeated identical alerts: the group state in ``$ETFUSE_HOME/alerts/groups.sqlite``.

The first alert of a fingerprint opens a group for ``group_window_minutes``; identical alerts
inside the window are suppressed (counted, files and days remembered); the first ``send`` or
``flush`` after the window closes the group, and ``digest_alert`` turns it into one digest
("N more like this since ...").  The state outlives the process (each ingest run is one) and two
processes share it safely (``BEGIN IMMEDIATE`` transactions, busy timeout).  Delivery is
etfuse/alerts/dispatcher.py.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Iterator

from etfuse.alerts.model import Alert, DigestInfo, as_utc, format_days, format_list

GROUPS_NAME = "groups.sqlite"
#: Bounds on what a group remembers (the JSON-lines log has everything).
MAX_GROUP_FILES = 1000
MAX_GROUP_REPORTS = 100
#: Closed groups older than this are pruned from the SQLite file.
KEEP_CLOSED_GROUPS = dt.timedelta(days=30)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_groups (
    group_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    severity TEXT NOT NULL, source TEXT NOT NULL, kind TEXT NOT NULL, checks TEXT NOT NULL,
    summary TEXT NOT NULL, first_alert_id TEXT NOT NULL,
    opened_at REAL NOT NULL, window_end REAL NOT NULL,
    suppressed INTEGER NOT NULL DEFAULT 0,
    files TEXT NOT NULL DEFAULT '[]', files_total INTEGER NOT NULL DEFAULT 0,
    days TEXT NOT NULL DEFAULT '[]', report_urls TEXT NOT NULL DEFAULT '[]',
    first_suppressed_at REAL, last_suppressed_at REAL,
    closed_at REAL);
CREATE INDEX IF NOT EXISTS alert_groups_open ON alert_groups (fingerprint, closed_at);
CREATE INDEX IF NOT EXISTS alert_groups_due ON alert_groups (closed_at, window_end);
"""


@dataclass(frozen=True)
class ClosedGroup:
    group_id: str
    fingerprint: str
    severity: str
    source: str
    kind: str
    checks: list[str]
    summary: str
    first_alert_id: str
    opened_at: dt.datetime
    window_end: dt.datetime
    suppressed: int
    files: list[str]
    files_total: int
    days: list[str]
    report_urls: list[str]
    first_suppressed_at: dt.datetime | None
    last_suppressed_at: dt.datetime | None


def _ts(value: dt.datetime) -> float:
    return as_utc(value).timestamp()


def _dt(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.timezone.utc)


class GroupStore:
    """Grouping state in SQLite; every read-modify-write runs inside one ``BEGIN IMMEDIATE``."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._ready = False                     # the file is created on first use, not here

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            try:
                db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
            finally:
                db.close()
            self._ready = True
        db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # ------------------------------------------------------------------
    def admit(self, alert: Alert, now: dt.datetime, window: dt.timedelta) -> tuple[str, bool, list[ClosedGroup]]:
        """Close due groups, then join the open group of the alert's fingerprint or open one.

        Returns ``(group_id, suppressed, closed_groups)``.
        """
        t = _ts(now)
        with self._transaction() as db:
            closed = self._close_due(db, t, force=False)
            row = db.execute(
                "SELECT group_id, files, files_total, days, report_urls FROM alert_groups "
                "WHERE fingerprint = ? AND closed_at IS NULL AND window_end > ? "
                "ORDER BY opened_at DESC LIMIT 1", (alert.fingerprint, t)).fetchone()
            if row is None:
                group_id = uuid.uuid4().hex[:12]
                db.execute(
                    "INSERT INTO alert_groups (group_id, fingerprint, severity, source, kind, checks, summary, "
                    "first_alert_id, opened_at, window_end) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (group_id, alert.fingerprint, alert.severity, alert.source, alert.kind,
                     json.dumps(alert.checks), alert.summary, alert.id, t, t + window.total_seconds()))
                return group_id, False, closed
            group_id, files_json, files_total, days_json, reports_json = row
            files = json.loads(files_json)
            if alert.file and alert.file not in files:
                files_total += 1
                if len(files) < MAX_GROUP_FILES:
                    files.append(alert.file)
            days = sorted(set(json.loads(days_json)) | set(alert.days))
            reports = json.loads(reports_json)
            if alert.report_url and alert.report_url not in reports and len(reports) < MAX_GROUP_REPORTS:
                reports.append(alert.report_url)
            db.execute(
                "UPDATE alert_groups SET suppressed = suppressed + 1, files = ?, files_total = ?, days = ?, "
                "report_urls = ?, first_suppressed_at = COALESCE(first_suppressed_at, ?), last_suppressed_at = ? "
                "WHERE group_id = ?",
                (json.dumps(files), files_total, json.dumps(days), json.dumps(reports), t, t, group_id))
            return group_id, True, closed

    def close_due(self, now: dt.datetime, *, force: bool = False) -> list[ClosedGroup]:
        """Close the groups whose window has ended (every open group with ``force``)."""
        with self._transaction() as db:
            return self._close_due(db, _ts(now), force=force)

    def _close_due(self, db: sqlite3.Connection, t: float, *, force: bool) -> list[ClosedGroup]:
        where = "closed_at IS NULL" + ("" if force else " AND window_end <= ?")
        params: tuple[Any, ...] = () if force else (t,)
        rows = db.execute(
            "SELECT group_id, fingerprint, severity, source, kind, checks, summary, first_alert_id, opened_at, "
            "window_end, suppressed, files, files_total, days, report_urls, first_suppressed_at, last_suppressed_at "
            f"FROM alert_groups WHERE {where} ORDER BY opened_at", params).fetchall()
        if rows:
            db.executemany("UPDATE alert_groups SET closed_at = ? WHERE group_id = ?", [(t, r[0]) for r in rows])
        db.execute("DELETE FROM alert_groups WHERE closed_at IS NOT NULL AND closed_at < ?",
                   (t - KEEP_CLOSED_GROUPS.total_seconds(),))
        return [ClosedGroup(group_id=r[0], fingerprint=r[1], severity=r[2], source=r[3], kind=r[4],
                            checks=json.loads(r[5]), summary=r[6], first_alert_id=r[7], opened_at=_dt(r[8]),
                            window_end=_dt(r[9]), suppressed=r[10], files=json.loads(r[11]), files_total=r[12],
                            days=json.loads(r[13]), report_urls=json.loads(r[14]),
                            first_suppressed_at=_dt(r[15]), last_suppressed_at=_dt(r[16]))
                for r in rows]

    def open_groups(self) -> list[dict[str, Any]]:
        """The groups still inside their window (for tools and tests)."""
        db = self._connect()
        try:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(
                "SELECT * FROM alert_groups WHERE closed_at IS NULL ORDER BY opened_at")]
        finally:
            db.close()


def digest_alert(group: ClosedGroup, now: dt.datetime) -> Alert:
    """The one alert that stands for a closed group's suppressed alerts."""
    assert group.suppressed > 0
    since = group.opened_at
    first = group.first_suppressed_at or since
    last = group.last_suppressed_at or first
    problem = group.kind + (f"; checks {', '.join(group.checks)}" if group.checks else "")
    names = [PurePath(f).name for f in group.files]
    more = group.files_total - len(group.files)
    summary = (f"{group.suppressed} more like this since {since:%Y-%m-%d %H:%M} UTC ({problem}): "
               f"files {format_list(names, limit=5)}{f' (+{more} more)' if more > 0 else ''}; "
               f"days {format_days(group.days, max_ranges=3)}")
    info = DigestInfo(group_id=group.group_id, count=group.suppressed, since=since, window_end=group.window_end,
                      first_at=first, last_at=last, files=group.files, files_total=group.files_total,
                      report_urls=group.report_urls, first_alert_id=group.first_alert_id)
    return Alert(severity=group.severity, source=group.source, kind=group.kind, checks=group.checks,
                 summary=summary, file=None, days=group.days,
                 details={"first_summary": group.summary},
                 report_url=group.report_urls[-1] if group.report_urls else None,
                 created_at=now, digest=info)
