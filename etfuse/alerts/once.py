"""Raise a condition's alert once per window, however often the check runs.

Checks such as "a source is overdue" or "a MODIS day still lacks a tile" run on every ingest and
daily run; the condition usually lasts for days.  Grouping (the dispatcher) only folds identical
alerts inside its window into a digest; these checks instead want one alert per condition and
window, remembered across processes: ``$ETFUSE_HOME/alerts/once.sqlite`` holds the last time each
key was alerted.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from contextlib import closing
from pathlib import Path

from etfuse.settings import Settings

ONCE_NAME = "once.sqlite"


class OnceLedger:
    """When each condition key was last alerted (UTC)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._db()) as db:
            db.execute("CREATE TABLE IF NOT EXISTS alerted (key TEXT PRIMARY KEY, at TEXT NOT NULL)")

    @classmethod
    def for_settings(cls, settings: Settings) -> "OnceLedger":
        return cls(Path(settings.home) / "alerts" / ONCE_NAME)

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def due(self, key: str, now: dt.datetime, window: dt.timedelta | None) -> bool:
        """True (and recorded) when ``key`` was never alerted, or last alerted ``window`` or more before
        ``now``; ``window=None`` means once ever.  Atomic across processes."""
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT at FROM alerted WHERE key=?", (key,)).fetchone()
            if row is not None:
                last = dt.datetime.fromisoformat(row[0])
                if window is None or now - last < window:
                    db.execute("ROLLBACK")
                    return False
            db.execute("INSERT OR REPLACE INTO alerted VALUES (?, ?)", (key, now.isoformat()))
            db.execute("COMMIT")
            return True
        finally:
            db.close()

    def clear(self, prefix: str) -> int:
        """Forget keys starting with ``prefix`` (the condition ended: alert again if it comes back)."""
        with closing(self._db()) as db:
            return db.execute("DELETE FROM alerted WHERE key LIKE ? ESCAPE '\\'",
                              (prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",)).rowcount
