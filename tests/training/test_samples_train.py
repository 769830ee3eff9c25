"""Samples, splits, source dropout and deterministic training on a small synthetic world."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from etfuse.features import FEATURES
from etfuse.harmonise import harmonise_into_store
from etfuse.store import HarmonisedStore
from training.samples import NoTrainingDataError, build_samples, normalisation, split_samples
from training.train import PatchBatcher, fit, predict

F = {name: k for k, name in enumerate(FEATURES)}


@pytest.fixture(scope="module")
def small_store(small_world, tmp_path_factory):
    from etfuse.settings import load_settings
    from tests.conftest import SMALL_WORLD
    w, s, e, n = SMALL_WORLD["bbox"]
    home = tmp_path_factory.mktemp("home")
    settings = load_settings(
        home=home, window_days=5,
        region={"name": "small", "lon_min": w, "lon_max": e, "lat_min": s, "lat_max": n,
                "resolution_deg": SMALL_WORLD["resolution_deg"], "margin_deg": SMALL_WORLD["margin_deg"]},
        static={"elevation_file": str(small_world / "static" / "elevation.nc")},
        training={"epochs": 2, "batch_size": 32, "heldout_station_fraction": 0.3, "seed": 4})
    store = HarmonisedStore(settings.harmonised)
    for source in ("era5land", "gleam", "modis", "cma", "stations"):
        for path in sorted((small_world / "landing" / source).glob("*")):
            harmonise_into_store(source, path, store, settings=settings)
    return settings, store


@pytest.fixture(scope="module")
def samples(small_store):
    settings, store = small_store
    return build_samples(store, settings)


def test_samples_shape_and_contents(samples, small_store):
    settings, _ = small_store
    n_st = len(samples.stations)
    assert samples.features.shape == (n_st, 40, 49, len(FEATURES))
    assert samples.targets.shape == (n_st, 40)
    c = samples.centre
    # the centre cell is the station's cell; lat/lon features are its centre
    st = samples.stations.iloc[0]
    assert abs(samples.features[0, 0, c, F["lat"]] - st["lat"]) < settings.region.resolution_deg
    # every source present in the small world: GLEAM and ERA5-Land finite at the centre
    assert np.isfinite(samples.features[:, :, c, F["gleam_et"]]).all()
    assert np.isfinite(samples.features[:, :, c, F["era5land_et"]]).all()
    # LST from MODIS where clear, else skt fallback flagged
    flag = samples.features[:, :, c, F["lst_from_skt"]]
    assert set(np.unique(flag[np.isfinite(flag)])) <= {0.0, 1.0} and 0 < np.nanmean(flag) < 1
    assert np.isfinite(samples.features[..., F["elevation"]][samples.patch_valid[:, None, :].repeat(40, 1)]).all()
    assert set(samples.fingerprints) >= {"era5land", "gleam", "modis", "stations"}
    # lysimeter targets and CMA targets both feed the target table
    assert set(samples.stations["source"]) == {"cma", "stations"}


def test_split_is_disjoint_and_normalisation_uses_training_only(samples, small_store):
    settings, _ = small_store
    split = split_samples(samples, settings)
    out_idx = set(np.flatnonzero(samples.stations["station_id"].isin(split.heldout_stations)))
    assert not set(split.train["s"]) & out_idx and not set(split.validation["s"]) & out_idx
    assert set(split.spatial["s"]) <= out_idx
    t0 = samples.days.get_loc(split.temporal_start)
    assert split.train["d"].max() < t0 <= split.temporal["d"].min()
    keys = lambda f: set(zip(f["s"], f["d"]))  # noqa: E731
    assert not keys(split.train) & keys(split.validation)
    assert not keys(split.train) & keys(split.heldout)
    norm = normalisation(samples, split)
    assert set(norm["train_stations"]) & set(split.heldout_stations) == set()
    assert norm["features"] == list(FEATURES) and len(norm["mean"]) == len(FEATURES)
    assert split_samples(samples, settings).heldout_stations == split.heldout_stations   # deterministic


def test_source_dropout_looks_like_a_missing_delivery(samples):
    batcher = PatchBatcher(samples, torch.device("cpu"))
    s, d = np.array([0, 1]), np.array([10, 12])
    x, lst_modis, lst_skt, lst_skt_default = batcher.window(s, d)
    out = PatchBatcher.drop_sources(x, lst_modis, lst_skt, {"gleam": np.array([True, False]),
                                                            "modis": np.array([False, True])})
    valid1 = samples.patch_valid[1]                           # patch cells inside the grid
    assert np.isnan(out[0, ..., F["gleam_et"]]).all() and np.isfinite(out[1][:, valid1, F["gleam_et"]]).all()
    # sample 1 lost MODIS: LST is the skt fallback everywhere and flagged
    np.testing.assert_allclose(out[1, ..., F["lst"]], lst_skt[1])          # NaN outside the grid on both sides
    assert (out[1][:, valid1, F["lst_from_skt"]] == 1).all()
    np.testing.assert_array_equal(out[0, ..., F["lst"]], x[0, ..., F["lst"]])     # untouched
    no_era5 = PatchBatcher.drop_sources(x, lst_modis, lst_skt, {"era5land": np.array([True, True]),
                                                                "modis": np.array([True, False])})
    assert np.isnan(no_era5[0, ..., F["lst"]]).all()           # neither MODIS nor skt: LST unknown
    assert np.isnan(no_era5[..., F["net_radiation"]]).all()


def test_a_missing_modis_file_falls_back_with_the_default_offset_on_the_days_it_misses(samples, small_store):
    """The no-MODIS regime as it occurs before 2000: skt plus the default offset (no MODIS cell that
    day to measure the offset on), and only on the days of the window MODIS misses."""
    settings, _ = small_store
    batcher = PatchBatcher(samples, torch.device("cpu"))
    s, d = np.array([0, 1]), np.array([10, 12])
    x, lst_modis, lst_skt, lst_skt_default = batcher.window(s, d)
    t = x.shape[1]
    days = np.zeros((2, t), bool)
    days[0, -2:] = True                                  # sample 0: MODIS missing on the last 2 days only
    out = PatchBatcher.drop_sources(x, lst_modis, lst_skt, {"modis": days}, lst_skt_default)
    valid0 = samples.patch_valid[0]
    k = settings.lst.fallback_default_offset_k
    skt_raw = lst_skt_default[0, -2:][:, valid0] - k
    np.testing.assert_allclose(out[0, -2:][:, valid0, F["lst"]], skt_raw + k, rtol=1e-6)
    assert (out[0, -2:][:, valid0, F["lst_from_skt"]] == 1).all()
    np.testing.assert_array_equal(out[0, :-2, ..., F["lst"]], x[0, :-2, ..., F["lst"]])   # other days untouched
    np.testing.assert_array_equal(out[1], x[1])
    # the default offset is not the offset measured on a MODIS day
    assert not np.allclose(lst_skt_default[0, -2:][:, valid0], lst_skt[0, -2:][:, valid0])


def test_dropout_draws_whole_windows_and_single_days():
    rng = np.random.default_rng(0)
    drop = PatchBatcher.draw_dropout(rng, 4000, 7, {"gleam": 0.3, "modis": 0.0})
    assert set(drop) == {"gleam"} and drop["gleam"].shape == (4000, 7)
    whole = drop["gleam"].all(axis=1).mean()
    partial = (drop["gleam"].any(axis=1) & ~drop["gleam"].all(axis=1)).mean()
    assert 0.27 < whole < 0.34 and 0.15 < partial < 0.25


def test_training_is_deterministic_for_a_seed(samples, small_store):
    settings, _ = small_store
    split = split_samples(samples, settings)
    norm = normalisation(samples, split)
    a = fit(samples, split, norm, settings)
    b = fit(samples, split, norm, settings)
    for (name, pa), (_, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(pa, pb), name
    batcher = PatchBatcher(samples, torch.device("cpu"))
    pred = predict(a.model, batcher, split.heldout)
    assert pred.shape == (len(split.heldout),) and (pred >= 0).all() and np.isfinite(pred).all()
    assert len(a.history) >= 1 and {"train_mse", "validation_rmse"} <= set(a.history[0])


def test_patch_smaller_than_receptive_field_is_refused(samples, small_store):
    settings, _ = small_store
    split = split_samples(samples, settings)
    deep = settings.model_copy(update={"training": settings.training.model_copy(update={"gcn_layers": 4})})
    with pytest.raises(ValueError, match="smaller than the model's receptive field"):
        fit(samples, split, normalisation(samples, split), deep)


def test_no_station_data_is_a_clear_error(tmp_path, small_store):
    settings, _ = small_store
    empty = HarmonisedStore(tmp_path / "h")
    with pytest.raises(NoTrainingDataError, match="no station observations"):
        build_samples(empty, settings)


def test_dense_patch_form_equals_pyg_propagation(samples, small_store):
    """Training runs the GCNConv layers as ``A_hat @ (z W) + b`` on patches; it must be what PyG's
    sparse propagation computes on the same patches, with edge cells (outside the grid) included,
    and the gradients too (the weights trained one way are served the other way)."""
    from training.model import GcnGru
    settings, _ = small_store
    torch.manual_seed(0)
    model = GcnGru(np.zeros(len(FEATURES)), np.ones(len(FEATURES)), hidden=8, gcn_layers=2)
    batcher = PatchBatcher(samples, torch.device("cpu"))
    keys = samples.keys()
    # stations whose patch reaches outside the grid are the interesting ones: include them all
    edge = np.flatnonzero(~samples.patch_valid.all(axis=1))
    picked = keys[keys["s"].isin(edge)].head(6) if len(edge) else keys.head(0)
    picked = pd.concat([picked, keys.sample(10, random_state=1)], ignore_index=True)
    x, edges, _, centre = batcher.batch(picked)
    xd, adjacency, _ = batcher.dense_batch(picked)
    sparse = model(x, edges, centre)
    dense = model.forward_patches(xd, adjacency, samples.centre)
    torch.testing.assert_close(dense, sparse, rtol=1e-5, atol=1e-5)
    g_sparse = torch.autograd.grad(sparse.sum(), model.convs[0].lin.weight)[0]
    g_dense = torch.autograd.grad(dense.sum(), model.convs[0].lin.weight)[0]
    torch.testing.assert_close(g_dense, g_sparse, rtol=1e-4, atol=1e-5)
    assert len(edge) == 0 or not samples.patch_valid[picked["s"]].all()


def test_training_threads_apply_to_the_fit_only(samples, small_store):
    settings, _ = small_store
    settings = settings.model_copy(update={"training": settings.training.model_copy(update={"threads": 1, "epochs": 1})})
    split = split_samples(samples, settings)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        fit(samples, split, normalisation(samples, split), settings, progress=lambda *a: seen.append(torch.get_num_threads()))
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
