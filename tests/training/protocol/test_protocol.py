"""The evaluation protocol: blocks and folds, the final test never seen (by construction), bootstrap
intervals on known cases, each baseline on a tiny frame, and the gate's refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from etfuse.features import FEATURES
from etfuse.metrics import all_scores
from training.gate import Comparison, evaluate_gate
from training.protocol import baselines as bl
from training.protocol.bootstrap import (cluster_ids, cluster_sums, difference_interval, resample_weights,
                                         scores_from_sums, scores_with_intervals)
from training.protocol.folds import (assign_folds, development_samples, final_test, final_test_keys, make_folds,
                                     station_blocks)
from training.protocol.frame import cell_frame
from training.protocol.run import run_protocol
from training.samples import SampleSet

F = {name: k for k, name in enumerate(FEATURES)}


def fake_samples(n_stations: int = 24, n_days: int = 200, seed: int = 0, window: int = 3) -> SampleSet:
    """A SampleSet of a made-up world: stations on a 6 x 4 lattice 60 km apart, 1-cell patches,
    station ET = 0.4 * ERA5-Land + 0.2 * GLEAM + a seasonal term + noise."""
    rng = np.random.default_rng(seed)
    days = pd.date_range("2020-01-01", periods=n_days, freq="D")
    lat = 35.0 + 0.54 * (np.arange(n_stations) // 6)
    lon = 95.0 + 0.67 * (np.arange(n_stations) % 6)
    features = np.zeros((n_stations, n_days, 1, len(FEATURES)), np.float32)
    doy = days.day_of_year.to_numpy()
    season = 2 + 1.5 * np.sin(2 * np.pi * (doy - 100) / 365.25)
    era5 = season[None, :] * 1.7 + rng.normal(0, 0.6, (n_stations, n_days))
    gleam = season[None, :] * 2.0 + rng.normal(0, 0.8, (n_stations, n_days))
    gleam[:, 150:160] = np.nan                                          # a GLEAM gap
    features[:, :, 0, F["era5land_et"]] = era5
    features[:, :, 0, F["gleam_et"]] = gleam
    features[:, :, 0, F["net_radiation"]] = 5 + season[None, :]
    features[:, :, 0, F["lst"]] = 280 + 5 * season[None, :]
    features[:, :, 0, F["lst_from_skt"]] = (rng.random((n_stations, n_days)) < 0.4).astype(np.float32)
    features[:, :, 0, F["lat"]] = lat[:, None]
    features[:, :, 0, F["lon"]] = lon[:, None]
    features[:, :, 0, F["doy_sin"]] = np.sin(2 * np.pi * doy / 365.25)[None, :]
    features[:, :, 0, F["doy_cos"]] = np.cos(2 * np.pi * doy / 365.25)[None, :]
    targets = (0.4 * era5 + 0.2 * np.nan_to_num(gleam, nan=2 * season[None, :]) + 0.3 * season[None, :]
               + rng.normal(0, 0.3, (n_stations, n_days))).astype(np.float32)
    targets[rng.random(targets.shape) < 0.05] = np.nan
    stations = pd.DataFrame({"station_id": [f"S{i:02d}" for i in range(n_stations)], "source": "cma",
                             "row": np.arange(n_stations), "col": 0, "lat": lat, "lon": lon})
    return SampleSet(features=features, lst_modis=features[..., F["lst"]].copy(), lst_skt=features[..., F["lst"]].copy(),
                     targets=targets, days=days, stations=stations, patch_valid=np.ones((n_stations, 1), bool),
                     patch_size=1, window_days=window)


@pytest.fixture
def proto_settings(settings):
    return settings.model_copy(update={"evaluation": settings.evaluation.model_copy(update={
        "folds": 4, "block_km": 100.0, "final_test_fraction": 0.2, "final_test_period_fraction": 0.25,
        "bootstrap_samples": 200, "bootstrap_block_days": 10})})


# ---------------------------------------------------------------------------- blocks and folds
def test_blocks_group_near_stations_and_split_far_ones():
    lat = np.array([36.0, 36.05, 36.0, 38.0])
    lon = np.array([100.0, 100.05, 102.0, 100.0])
    blocks = station_blocks(lat, lon, block_km=50)
    assert blocks[0] == blocks[1]                      # 7 km apart
    assert len({blocks[0], blocks[2], blocks[3]}) == 3  # 180 km and 220 km away


def test_folds_hold_whole_blocks_and_are_balanced():
    blocks = np.repeat(np.arange(10), [3, 1, 2, 4, 1, 1, 2, 3, 2, 1])
    folds = assign_folds(blocks, k=4, seed=1)
    for b in np.unique(blocks):
        assert len(set(folds[blocks == b])) == 1       # a block is never split
    counts = np.bincount(folds)
    assert len(counts) == 4 and counts.max() - counts.min() <= 2
    assert (assign_folds(blocks, k=4, seed=1) == folds).all()
    assert assign_folds(np.array([0, 0, 1]), k=5, seed=0).max() == 1   # fewer blocks than folds


def test_final_test_is_never_seen_by_construction(proto_settings):
    samples = fake_samples()
    final = final_test(samples, proto_settings)
    assert final.stations and final.start > samples.days[0]
    dev = development_samples(samples, final)
    # the development set holds no final-test station and no final-test day at all
    assert not set(dev.stations["station_id"]) & set(final.stations)
    assert dev.days.max() < final.start
    folds = make_folds(dev, proto_settings)
    assert len(folds) >= 2
    seen = []
    for fold in folds:
        for keys in (fold.train, fold.validation, fold.test):
            ids = dev.stations["station_id"].to_numpy()[keys["s"].to_numpy()]
            assert not set(ids) & set(final.stations)
            assert (dev.days[keys["d"].to_numpy()] < final.start).all()
        train_ids = set(dev.stations["station_id"].to_numpy()[pd.concat([fold.train, fold.validation])["s"]])
        assert not train_ids & set(fold.test_stations)  # a fold's test stations are never its training stations
        seen += list(fold.test_stations)
    assert sorted(seen) == sorted(dev.stations["station_id"])          # every station tested exactly once
    # and the final keys are exactly the complement in the full SampleSet
    fk = final_test_keys(samples, final)
    ids = samples.stations["station_id"].to_numpy()[fk["s"]]
    assert (np.isin(ids, final.stations) | (samples.days[fk["d"]] >= final.start)).all()
    assert len(fk) + len(dev.keys()) == len(samples.keys())


def test_explicit_final_test_stations_and_date(proto_settings):
    samples = fake_samples()
    s = proto_settings.model_copy(update={"evaluation": proto_settings.evaluation.model_copy(update={
        "final_test_stations": ("S03", "S07"), "final_test_start": pd.Timestamp("2020-06-01").date()})})
    final = final_test(samples, s)
    assert final.stations == ("S03", "S07") and final.start == pd.Timestamp("2020-06-01")
    bad = s.model_copy(update={"evaluation": s.evaluation.model_copy(update={"final_test_stations": ("NOPE",)})})
    with pytest.raises(Exception, match="NOPE"):
        final_test(samples, bad)


def test_protocol_fits_see_no_final_test_row(proto_settings, monkeypatch):
    """Every baseline fit of the whole protocol (folds and the final refit) is recorded: none of its
    rows is a final-test station or day; the folds' scoring rows neither."""
    samples = fake_samples()
    final = final_test(samples, proto_settings)
    seen: list[pd.DataFrame] = []
    original = bl.Climatology.fit

    def spy(self, frame):
        seen.append(frame[["station_id", "date"]].copy())
        return original(self, frame)

    monkeypatch.setattr(bl.Climatology, "fit", spy)
    result = run_protocol(samples, proto_settings, variants=())
    assert seen
    for frame in seen:
        assert not frame["station_id"].isin(final.stations).any()
        assert (frame["date"] < final.start).all()
    assert not result.cv_frame["station_id"].isin(final.stations).any()
    assert (result.cv_frame["date"] < final.start).all()
    # the final test is scored on final rows only
    f = result.final_frame
    assert (f["station_id"].isin(final.stations) | (f["date"] >= final.start)).all()
    # the linear baseline recovers the made-up relation: far better than raw ERA5-Land or climatology
    rmse = result.cv["overall"].set_index("model")["rmse"]
    assert rmse["linear_both"] < 0.5 < rmse["era5land"]
    assert rmse["linear_both"] < rmse["climatology"]
    assert result.strongest_baseline in bl.baselines()


# ---------------------------------------------------------------------------- bootstrap
def test_scores_from_sums_equal_the_metrics():
    rng = np.random.default_rng(3)
    obs = rng.gamma(2, 1, 500)
    sim = obs * 0.8 + rng.normal(0, 0.5, 500)
    sums = cluster_sums(obs, sim, np.zeros(500, int), 1).sum(axis=0)
    got = scores_from_sums(sums)
    want = all_scores(obs, sim)
    for key in ("rmse", "mae", "rb_percent", "cc", "kge"):
        assert got[key] == pytest.approx(want[key], rel=1e-9)


def test_bootstrap_interval_on_known_cases():
    rng = np.random.default_rng(0)
    n_clusters, per = 200, 20
    clusters = np.repeat(np.arange(n_clusters), per)
    obs = rng.gamma(2, 1.5, n_clusters * per)
    weights = resample_weights(n_clusters, 1000, seed=1)
    # a constant error of 0.5: every resample has RMSE 0.5 exactly
    exact = scores_with_intervals(obs, obs + 0.5, clusters, weights)
    assert exact["rmse_lo"] == pytest.approx(0.5) and exact["rmse_hi"] == pytest.approx(0.5)
    # independent unit-variance errors: the interval covers 1 and has the width of the sampling error
    noisy = scores_with_intervals(obs, obs + rng.normal(0, 1, obs.size), clusters, weights)
    assert noisy["rmse_lo"] < 1.0 < noisy["rmse_hi"]
    assert 0.01 < noisy["rmse_hi"] - noisy["rmse_lo"] < 0.08            # ~ 2 * 1.96 * sqrt(0.5 / 4000)
    # errors shared within a cluster: the block bootstrap widens the interval (iid resampling would not)
    shared = obs + np.repeat(rng.normal(0, 1, n_clusters), per)
    wide = scores_with_intervals(obs, shared, clusters, weights)
    assert wide["rmse_hi"] - wide["rmse_lo"] > 2 * (noisy["rmse_hi"] - noisy["rmse_lo"])


def test_difference_interval_is_paired():
    rng = np.random.default_rng(1)
    clusters = np.repeat(np.arange(100), 10)
    obs = rng.gamma(2, 1.5, 1000)
    a = obs + rng.normal(0, 1.0, 1000)
    weights = resample_weights(100, 500, seed=2)
    same = difference_interval(obs, a, a.copy(), clusters, weights)
    assert same["diff"] == 0 and same["lo"] == 0 and same["hi"] == 0
    better = difference_interval(obs, obs + rng.normal(0, 0.5, 1000), a, clusters, weights)
    assert better["hi"] < 0


def test_cluster_ids_cross_blocks_and_time():
    frame = pd.DataFrame({"block": [0, 0, 1, 0], "date": pd.to_datetime(["2020-01-01", "2020-01-05", "2020-01-01",
                                                                          "2020-02-15"])})
    ids = cluster_ids(frame, block_days=30)
    assert ids[0] == ids[1] and len({ids[0], ids[2], ids[3]}) == 3


# ---------------------------------------------------------------------------- baselines
@pytest.fixture
def frames():
    samples = fake_samples(n_stations=12, n_days=365)
    keys = samples.keys()
    frame = cell_frame(samples, keys, np.zeros(12, int))
    train = frame[frame["s"] < 8].reset_index(drop=True)
    test = frame[frame["s"] >= 8].reset_index(drop=True)
    return train, test


def _rmse(test, pred):
    return all_scores(test["obs"], pred)["rmse"]


def test_climatology_follows_the_season(frames):
    train, test = frames
    pred = bl.Climatology().fit(train).predict(test)
    jul = test["date"].dt.month == 7
    jan = test["date"].dt.month == 1
    assert pred[jul.to_numpy()].mean() > pred[jan.to_numpy()].mean() + 1.0
    assert _rmse(test, pred) < np.nanstd(test["obs"])


def test_linear_bias_recovers_a_linear_truth_and_falls_back(frames):
    train, test = frames
    both = bl.baselines()["linear_both"].fit(train)
    pred = both.predict(test)
    assert np.isfinite(pred).all() and (pred >= 0).all()               # the GLEAM gap is filled by the fallback
    assert _rmse(test, pred) < _rmse(test, bl.Climatology().fit(train).predict(test))
    assert _rmse(test, pred) < 0.5
    with pytest.raises(ValueError, match="training rows"):
        bl.LinearBias(("gleam",)).fit(train.iloc[:2])


def test_quantile_mapping_matches_the_distribution(frames):
    train, test = frames
    pred = bl.baselines()["qmap_era5land"].fit(train).predict(test)
    assert np.isfinite(pred).all()
    assert abs(np.mean(pred) - np.nanmean(test["obs"])) < 0.2                 # bias removed
    assert abs(np.nanmean(test["era5land_et"]) - np.nanmean(test["obs"])) > 0.5   # the raw source is biased


def test_gradient_boosting_learns_from_features_and_lags(frames):
    train, test = frames
    assert "era5land_et_lag1" in bl.hgb_columns(train)
    pred = bl.GradientBoosting(max_iter=100).fit(train).predict(test)
    assert _rmse(test, pred) < _rmse(test, bl.Climatology().fit(train).predict(test))


# ---------------------------------------------------------------------------- the gate
def _gate(rmse, predictions, vs_baseline, vs_champion=None):
    comps = [Comparison("baseline hgb", *vs_baseline)]
    if vs_champion is not None:
        comps.insert(0, Comparison("champion v1", *vs_champion))
    return evaluate_gate(rmse, 1.0 if vs_champion else None, 3.0, 2.5, candidate_predictions=predictions,
                         comparisons=comps)


def test_gate_refuses_a_constant_model():
    checks = _gate(0.9, np.full(100, 2.1), (+0.2, +0.1, +0.3))
    failed = {c.name for c in checks if not c.passed}
    assert "varies" in failed and "beyond_interval:baseline hgb" in failed
    assert not all(c.passed for c in checks)
    # a constant that happens to beat the raw products still does not pass
    assert {c.name for c in checks if c.passed} >= {"gleam", "era5land"}


def test_gate_refuses_a_tie_with_the_baseline_and_a_tie_with_the_champion():
    varying = np.linspace(0.1, 5, 100)
    tie = _gate(0.9, varying, (-0.02, -0.05, +0.01))
    assert not all(c.passed for c in tie)
    assert any("only ties baseline hgb" in c.text for c in tie if not c.passed)
    champion_tie = _gate(0.9, varying, (-0.1, -0.15, -0.05), vs_champion=(-0.02, -0.06, +0.02))
    assert not all(c.passed for c in champion_tie)
    nan = _gate(0.9, varying, (float("nan"), -0.2, -0.1))
    assert not all(c.passed for c in nan)


def test_gate_promotes_a_clear_winner():
    checks = _gate(0.9, np.linspace(0.1, 5, 100), (-0.1, -0.15, -0.05), vs_champion=(-0.2, -0.3, -0.1))
    assert all(c.passed for c in checks), [c.text for c in checks if not c.passed]


# ---------------------------------------------------------------------------- gridded truth
def test_seam_score_sees_source_blocks_and_not_smooth_fields():
    from training.protocol.truth import seam_score
    lat = 36.0 - (np.arange(50) + 0.5) * 0.01
    lon = 100.0 + (np.arange(60) + 0.5) * 0.01
    smooth = np.sin(lon[None, None, :] * 3) + np.cos(lat[None, :, None] * 2) + np.zeros((2, 1, 1))
    blocks = np.floor(lon / 0.25)[None, None, :] + np.floor(lat / 0.25)[None, :, None] + np.zeros((2, 1, 1))
    assert abs(seam_score(smooth, lat, lon, 0.25, 0.125)) < 0.01
    assert seam_score(blocks, lat, lon, 0.25, 0.125) > 0.5          # GLEAM centres at .125: edges at .25
    assert seam_score(blocks, lat, lon, 0.25, 0.0) < 0.1             # edges elsewhere: no seam there


def test_distance_and_truth_scores_split_away_cells():
    from etfuse.grid import TargetGrid
    from training.protocol.truth import distance_to_stations_km, truth_scores
    grid = TargetGrid(100.0, 101.0, 36.0, 37.0, 0.05)
    dist = distance_to_stations_km(grid, np.array([36.5]), np.array([100.5]))
    assert dist.min() < 5 and dist.max() > 50
    truth = np.ones((3,) + grid.shape)
    pred = truth + (dist >= 20)[None] * 1.0                      # wrong only away from the station
    table = truth_scores({"m": pred}, truth, grid, dist, away_km=20).table.set_index("model")
    assert table.loc["m", "rmse_away"] == pytest.approx(1.0) and table.loc["m", "rmse_near"] == pytest.approx(0.0)


def test_a_baseline_without_its_inputs_is_skipped_not_fatal(proto_settings):
    """A run whose training days have no GLEAM cannot fit a GLEAM correction: that baseline is
    named as skipped and the others (climatology at least) are still fitted and scored."""
    from training.protocol.heldout import add_baselines, strongest
    samples = fake_samples()
    samples.features[..., F["gleam_et"]] = np.nan                     # GLEAM not published for this period
    keys = samples.keys()
    train, heldout = keys[keys["s"] < 16].reset_index(drop=True), keys[keys["s"] >= 16].reset_index(drop=True)
    heldout = heldout.assign(obs=samples.targets[heldout["s"], heldout["d"]])
    columns, skipped = add_baselines(samples, train, heldout, proto_settings)
    assert "linear_gleam" in skipped and "need at least" in skipped["linear_gleam"]
    assert "baseline_climatology" in columns and "baseline_linear_era5land" in columns
    assert not any(c.endswith("_gleam") for c in columns)
    assert strongest(heldout, columns) in columns
