"""The conformal scaling of the interval: calibrated widths cover the nominal share on fresh data,
per season, and the calibration survives its JSON form."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from etfuse.interval import (IntervalCalibration, IntervalError, apply_interval, calibrate, conformal_quantile,
                             conformity_scores, coverage, coverage_table)


def _draw(rng, n, spread):
    """A point estimate, raw quantiles 3x too narrow, and observations with season-dependent noise."""
    et = rng.uniform(0.5, 5.0, n)
    seasons = rng.choice(["DJF", "MAM", "JJA", "SON"], n)
    sd = np.array([spread[s] for s in seasons]) * (0.2 + 0.3 * et)
    obs = np.maximum(et + sd * rng.standard_normal(n), 0.0)      # station ET is never negative
    half = 1.645 * sd / 3.0
    return et, et - half, et + half, obs, seasons


def test_calibrated_interval_covers_the_nominal_share_in_each_season():
    rng = np.random.default_rng(3)
    spread = {"DJF": 0.5, "MAM": 1.0, "JJA": 1.5, "SON": 1.0}
    cal = calibrate(*_draw(rng, 4000, spread), level=0.9)
    assert set(cal.factors) == {"DJF", "MAM", "JJA", "SON"}
    assert all(2.4 < f < 3.6 for f in cal.overall)          # the raw widths were 3x too narrow
    et, q05, q95, obs, seasons = _draw(rng, 8000, spread)
    factor = np.array([cal.factors[s] for s in seasons])
    lower, upper = apply_interval(et, q05, q95, factor[:, 0], factor[:, 1])
    raw = coverage(obs, q05, q95)
    assert raw < 0.6                                     # what the raw heads would have promised
    for season in ("DJF", "MAM", "JJA", "SON"):
        sel = seasons == season
        assert 0.87 <= coverage(obs[sel], lower[sel], upper[sel]) <= 0.93, season


def test_scores_quantile_and_bounds():
    et, q05, q95 = np.array([2.0, 2.0]), np.array([1.0, 1.0]), np.array([4.0, 4.0])
    np.testing.assert_allclose(conformity_scores(et, q05, q95, np.array([0.5, 7.0])), [1.5, 2.5])
    assert conformal_quantile(np.arange(1, 11, dtype=float), 0.9) == 10.0   # ceil(11 * 0.9) = 10th
    lower, upper = apply_interval(np.array([0.2]), np.array([0.1]), np.array([0.5]), 3.0)
    assert lower[0] == 0.0 and upper[0] == pytest.approx(1.1)              # never below 0
    with pytest.raises(IntervalError, match="no finite"):
        conformal_quantile(np.array([np.nan]), 0.9)


def test_a_season_with_few_samples_uses_the_overall_factor_and_json_round_trips():
    rng = np.random.default_rng(0)
    et, q05, q95, obs, seasons = _draw(rng, 400, {"DJF": 1.0, "MAM": 1.0, "JJA": 1.0, "SON": 1.0})
    seasons = np.where(seasons == "DJF", "MAM", seasons)
    seasons[:5] = "DJF"
    cal = calibrate(et, q05, q95, obs, seasons)
    assert "DJF" not in cal.factors and cal.factor(pd.Timestamp("2021-01-15")) == cal.overall
    assert cal.factor(pd.Timestamp("2021-07-01")) == cal.factors["JJA"]
    again = IntervalCalibration.from_json(cal.to_json())
    assert again == cal and again.samples["DJF"] == 5
    # calibrations written with one factor per season read as (f, f)
    old = IntervalCalibration.from_json('{"level": 0.9, "factors": {"JJA": 1.5}, "overall": 1.2}')
    assert old.factor(pd.Timestamp("2021-07-01")) == (1.5, 1.5) and old.overall == (1.2, 1.2)
    with pytest.raises(IntervalError, match="model.onnx metadata: expected JSON with level"):
        IntervalCalibration.from_json('{"level": 0.9}', source="model.onnx metadata")


def test_zero_inflated_winter_puts_the_misses_above():
    """Half of the winter station-days are 0 mm: a lower bound of 0 covers them whatever its factor,
    so the narrowest valid interval spends the whole 10 % above and covers 90 %, not 95 %."""
    rng = np.random.default_rng(7)

    def draw(n):
        et = rng.uniform(0.2, 1.0, n)
        obs = np.where(rng.random(n) < 0.5, 0.0, et * rng.lognormal(0.0, 0.5, n))
        return et, et * 0.5, et * 1.5, obs, np.full(n, "DJF")
    cal = calibrate(*draw(6000))
    f_lo, f_hi = cal.factors["DJF"]
    et, q05, q95, obs, _ = draw(20000)
    lower, upper = apply_interval(et, q05, q95, f_lo, f_hi)
    assert 0.88 <= coverage(obs, lower, upper) <= 0.92
    assert (obs > upper).mean() > 0.08 and (lower == 0).all()     # 0 is inside; the misses are above
    symmetric = conformal_quantile(conformity_scores(*draw(6000)[:4]), 0.9)
    assert coverage(obs, *apply_interval(et, q05, q95, symmetric)) > 0.93   # what one factor would give


def test_coverage_table_per_season():
    frame = pd.DataFrame({"season": ["JJA", "JJA", "DJF", "DJF"], "obs": [1.0, 5.0, 0.1, np.nan],
                          "lo": [0.5, 0.5, 0.0, 0.0], "hi": [2.0, 2.0, 0.3, 0.3]})
    table = coverage_table(frame, "lo", "hi").set_index("season")
    assert table.loc["all", "n"] == 3 and table.loc["all", "coverage"] == pytest.approx(2 / 3)
    assert table.loc["JJA", "coverage"] == 0.5 and table.loc["DJF", "mean_width_mm"] == pytest.approx(0.3)
