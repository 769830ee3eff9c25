"""The gridded truth is scored on days spread over the whole final period, not its first days."""

from __future__ import annotations

import pandas as pd

from training.protocol.truth import scored_days


def test_scored_days_span_the_period_evenly():
    start, end = pd.Timestamp("2001-02-05"), pd.Timestamp("2001-06-30")
    days = scored_days(start, end, 14)
    assert len(days) == 14 and days[0] == start and days[-1] == end
    gaps = days.to_series().diff().dropna().dt.days
    assert gaps.max() - gaps.min() <= 1                      # evenly spaced, to the day
    assert {d.month for d in days} == {2, 3, 4, 5, 6}         # every month of the period is judged


def test_a_short_period_is_scored_every_day():
    days = scored_days(pd.Timestamp("2021-07-01"), pd.Timestamp("2021-07-05"), 14)
    assert list(days) == list(pd.date_range("2021-07-01", "2021-07-05"))
