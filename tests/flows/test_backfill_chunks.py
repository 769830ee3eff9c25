"""How the backfill cuts stale days into chunks (flows/backfill.py chunks)."""

from __future__ import annotations

from datetime import date

import pandas as pd

from flows.backfill import chunks


def days(start: str, end: str) -> list[pd.Timestamp]:
    return list(pd.date_range(start, end))


def lengths(pieces) -> list[int]:
    return [(b - a).days + 1 for a, b in pieces]


def test_chunks_cover_every_day_once_in_order():
    stale = days("2021-06-30", "2021-08-31")
    for size, workers in ((15, 1), (15, 2), (30, 2), (7, 3), (100, 2)):
        pieces = chunks(stale, size, workers)
        covered = [d for a, b in pieces for d in pd.date_range(a, b)]
        assert covered == stale
        assert max(lengths(pieces)) <= size


def test_chunks_are_balanced_over_the_workers():
    """63 days in chunks of at most 15 on 2 workers: 6 chunks of 10-11 days, not 15,15,15,15,3."""
    pieces = chunks(days("2021-06-30", "2021-08-31"), 15, 2)
    assert len(pieces) == 6 and set(lengths(pieces)) == {10, 11}
    assert lengths(chunks(days("2021-06-30", "2021-08-31"), 15, 1)) == [13, 13, 13, 12, 12]


def test_gaps_split_chunks_and_short_runs_stay_whole():
    stale = days("2021-01-01", "2021-01-03") + days("2021-01-10", "2021-01-10")
    assert chunks(stale, 15, 2) == [(date(2021, 1, 1), date(2021, 1, 2)), (date(2021, 1, 3), date(2021, 1, 3)),
                                    (date(2021, 1, 10), date(2021, 1, 10))]
    assert chunks([], 15, 2) == []
