import numpy as np
import pytest

from etfuse import metrics


def test_scores_against_hand_computation():
    obs = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    sim = np.array([1.5, 2.0, 2.0, 5.0, 9.0])           # the NaN pair is dropped
    d = np.array([0.5, 0.0, -1.0, 1.0])
    assert metrics.rmse(obs, sim) == pytest.approx(np.sqrt(np.mean(d ** 2)))
    assert metrics.mae(obs, sim) == pytest.approx(np.mean(np.abs(d)))
    assert metrics.relative_bias(obs, sim) == pytest.approx(100 * 0.5 / 10.0)
    o, s = obs[:4], sim[:4]
    r = np.corrcoef(o, s)[0, 1]
    assert metrics.pearson_cc(obs, sim) == pytest.approx(r)
    expected_kge = 1 - np.sqrt((r - 1) ** 2 + (s.std() / o.std() - 1) ** 2 + (s.mean() / o.mean() - 1) ** 2)
    assert metrics.kge(obs, sim) == pytest.approx(expected_kge)
    assert metrics.all_scores(obs, sim)["n"] == 4


def test_perfect_and_degenerate_inputs():
    x = np.array([0.5, 1.0, 2.0])
    assert metrics.rmse(x, x) == 0 and metrics.kge(x, x) == pytest.approx(1.0)
    assert np.isnan(metrics.rmse([np.nan], [1.0]))
    assert np.isnan(metrics.pearson_cc([1, 1, 1], [1, 2, 3]))
    assert np.isnan(metrics.relative_bias([0.0, 0.0], [1.0, 1.0]))
    with pytest.raises(ValueError, match="must pair up"):
        metrics.rmse([1, 2], [1, 2, 3])
