"""UTC time, in one place: the clock and the ISO 8601 text every record of etfuse writes.

Every time etfuse stores (ledgers, reason records, alert logs, product attributes, registry tags)
is UTC.  ``iso_utc`` writes ``Z`` for UTC; ``timespec`` is the one of ``datetime.isoformat``
(``"auto"`` keeps microseconds when present, ``"seconds"`` drops them, as the product files' CF
attributes and the fetch ledger want).
"""

from __future__ import annotations

import datetime as dt

__all__ = ["utcnow", "as_utc", "iso_utc", "utcnow_iso"]


def utcnow() -> dt.datetime:
    """Now, as an aware UTC datetime."""
    return dt.datetime.now(dt.timezone.utc)


def as_utc(value: dt.datetime) -> dt.datetime:
    """Aware UTC datetime; a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def iso_utc(value: dt.datetime, timespec: str = "auto") -> str:
    """``2021-06-01T10:00:00Z`` (with ``timespec="auto"`` microseconds only when present)."""
    return as_utc(value).isoformat(timespec=timespec).replace("+00:00", "Z")


def utcnow_iso(timespec: str = "seconds") -> str:
    """Now as ISO 8601 UTC text, ``2021-06-01T10:00:00Z``."""
    return iso_utc(utcnow(), timespec)
