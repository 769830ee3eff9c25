"""The whole protocol on a small synthetic world (CI): folds, every baseline, the GCN-GRU and two
ablations, the final test, the report; and the ablations' sample transformations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from etfuse.features import FEATURES
from training.protocol.variants import VARIANTS, cv_settings, variant_samples
from tests.training.protocol.test_protocol import fake_samples

F = {name: k for k, name in enumerate(FEATURES)}


def test_variants_remove_what_they_name(settings):
    samples = fake_samples()
    samples.features[:, :, 0, F["lst_from_skt"]] = 0.0                 # MODIS everywhere
    assert variant_samples(samples, "gcn_gru") is samples
    no_gleam = variant_samples(samples, "without_gleam")
    assert np.isnan(no_gleam.features[..., F["gleam_et"]]).all()
    assert np.array_equal(no_gleam.targets, samples.targets, equal_nan=True)
    no_modis = variant_samples(samples, "without_modis")
    assert (no_modis.features[..., F["lst_from_skt"]] == 1).all() and np.isnan(no_modis.lst_modis).all()
    no_era5 = variant_samples(samples, "without_era5land")
    assert np.isnan(no_era5.features[..., F["era5land_et"]]).all()
    assert np.isnan(no_era5.features[..., F["net_radiation"]]).all()
    assert variant_samples(samples, "no_gru").window_days == 1
    assert variant_samples(samples, "no_graph").patch_valid.sum() == len(samples.stations)
    assert np.isfinite(samples.features[..., F["gleam_et"]]).any()     # the original is untouched
    with pytest.raises(ValueError, match="unknown model variant"):
        variant_samples(samples, "no_such")
    s = settings.model_copy(update={"evaluation": settings.evaluation.model_copy(update={"cv_epochs": 3})})
    assert cv_settings(s, "without_gleam").training.dropout_gleam == 0 and cv_settings(s, "gcn_gru").training.epochs == 3
    assert set(VARIANTS) >= {"gcn_gru", "no_graph", "no_gru", "without_gleam", "without_era5land", "without_modis"}


@pytest.mark.slow
def test_whole_protocol_on_a_small_world(small_world, tmp_path):
    from etfuse.harmonise import harmonise_into_store
    from etfuse.settings import load_settings
    from etfuse.store import HarmonisedStore
    from tests.conftest import SMALL_WORLD
    from training.protocol.report import write_report
    from training.protocol.run import run_protocol
    from training.samples import build_samples

    w, s, e, n = SMALL_WORLD["bbox"]
    settings = load_settings(
        home=tmp_path / "home", window_days=5,
        region={"name": "small", "lon_min": w, "lon_max": e, "lat_min": s, "lat_max": n,
                "resolution_deg": SMALL_WORLD["resolution_deg"], "margin_deg": SMALL_WORLD["margin_deg"]},
        static={"elevation_file": str(small_world / "static" / "elevation.nc")},
        training={"batch_size": 64},
        evaluation={"folds": 3, "block_km": 25, "cv_epochs": 1, "cv_patience": 1, "bootstrap_samples": 100,
                    "bootstrap_block_days": 7, "final_test_fraction": 0.2, "final_test_period_fraction": 0.2})
    store = HarmonisedStore(settings.harmonised)
    for source in ("era5land", "gleam", "modis", "cma", "stations"):
        for path in sorted((small_world / "landing" / source).glob("*")):
            harmonise_into_store(source, path, store, settings=settings)
    samples = build_samples(store, settings)
    result = run_protocol(samples, settings, variants=("gcn_gru", "no_graph", "no_gru"))
    models = set(result.cv["overall"]["model"])
    assert models >= {"gcn_gru", "no_graph", "no_gru", "climatology", "linear_gleam", "linear_era5land",
                      "linear_both", "qmap_gleam", "qmap_era5land", "hgb", "gleam", "era5land"}
    overall = result.cv["overall"].set_index("model")
    finite = overall.dropna(subset=["rmse_lo", "rmse_hi"])
    assert len(finite) == len(overall)
    assert (finite["rmse_lo"] <= finite["rmse"] + 1e-9).all() and (finite["rmse"] <= finite["rmse_hi"] + 1e-9).all()
    # every model is scored on the same station-days
    assert overall["n"].nunique() == 1
    # the final test: its stations never in the folds, scored once
    assert not set(result.cv_frame["station_id"]) & set(result.final.stations)
    assert len(result.final_frame) and set(result.final_test["overall"]["model"]) == models
    assert {"season", "regime", "station", "difference", "ablation"} <= set(result.cv)
    # each ablation paired with the full model on the same rows: diff = RMSE(variant) - RMSE(gcn_gru)
    ablation = result.cv["ablation"].set_index("model")
    assert set(ablation.index) == {"no_graph", "no_gru"} and (ablation["reference"] == "gcn_gru").all()
    for variant in ("no_graph", "no_gru"):
        assert ablation.loc[variant, "diff"] == pytest.approx(overall.loc[variant, "rmse"] - overall.loc["gcn_gru", "rmse"],
                                                              abs=1e-9)
        assert ablation.loc[variant, "lo"] <= ablation.loc[variant, "diff"] <= ablation.loc[variant, "hi"]
    # the gridded truth: the final models on every cell of days spread over the final period
    from training.protocol.truth import evaluate_truth
    truth = evaluate_truth(result, settings, store, small_world / "truth", tmp_path / "report", n_days=3)
    result.truth = truth.table
    table = truth.table.set_index("model")
    assert {"gcn_gru", "linear_both", "climatology", "gleam", "era5land"} <= set(table.index)
    assert (table["days"] == 3).all() and np.isfinite(table["rmse_all"]).all()
    assert table.loc["gcn_gru", "rmse_all"] < table.loc["era5land", "rmse_all"]     # fused beats the raw source
    assert (tmp_path / "report" / "plots" / "truth_rmse_maps.png").stat().st_size > 0
    paths = write_report(result, tmp_path / "report", settings, title="small world")
    text = paths["markdown"].read_text()
    assert "Verdict:" in text and "Final test" in text and "hgb" in text and "Ablations: RMSE difference" in text
    assert "Against the gridded truth" in text
    # the interval: calibrated on the folds' out-of-fold rows, its coverage of the final test reported
    cover = result.interval.set_index("season")
    assert cover.loc["all", "n"] == result.final_frame["obs"].notna().sum()
    assert 0 < cover.loc["all", "coverage"] <= 1 and cover.loc["all", "mean_width_mm"] > 0
    assert min(result.interval_calibration.overall) > 0 and "90 % interval of the GCN-GRU on the final test" in text
    data = json.loads(paths["json"].read_text())
    assert data["strongest_baseline"] in models and data["tables"]["cv_overall"]
    assert data["interval"]["coverage"][0]["season"] == "all" and data["interval"]["calibration"]["level"] == 0.9
    assert {"cv_scatter", "cv_rmse_by_season", "cv_rmse_by_station"} <= set(paths)
