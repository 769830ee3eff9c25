"""The predictor: tiles join without seams, the serving graphs equal the PyG model, providers are
checked, bad outputs are refused, the champion alias is followed per request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from serving.predictor import Predictor, PredictorError, tiles
from training.export import export_onnx, export_serving_parts, pyg_on_tile
from training.model import GcnGru

F = 10


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(5)
    model = GcnGru(np.linspace(-1, 1, F), np.linspace(0.5, 2, F), hidden=8, gcn_layers=2).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    rng = np.random.default_rng(0)
    tiles_ = [(rng.normal(size=(7, 9, 11, F)).astype(np.float32), np.ones((9, 11), np.float32))]
    folder = tmp_path_factory.mktemp("model")
    export_onnx(model, folder / "model.onnx", window_days=7, features=tuple(f"f{i}" for i in range(F)),
                parity_tiles=tiles_)
    export_serving_parts(model, folder, window_days=7, n_features=F, parity_tiles=tiles_)
    return model, folder / "model.onnx"


def settings_with(settings, **serving):
    return settings.model_copy(update={"serving": settings.serving.model_copy(update=serving)})


def test_tiles_cover_the_grid_once_with_halos():
    seen = np.zeros((50, 37), int)
    for t in tiles((50, 37), 16, 3):
        seen[t.core] += 1
        assert t.outer[0].start == max(0, t.core[0].start - 3) and t.outer[1].stop == min(37, t.core[1].stop + 3)
    assert (seen == 1).all()


def test_tiled_equals_untiled_and_equals_pyg(exported, settings):
    model, path = exported
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 41, 53, F)).astype(np.float32)
    x[:, 10:20, :, 0] = np.nan                              # a source missing over a band
    small = Predictor(settings_with(settings, tile_size=8), model_path=path).predict(x)
    whole = Predictor(settings_with(settings, tile_size=4096), model_path=path).predict(x)
    np.testing.assert_array_equal(small, whole)              # no seams: bit-identical
    expected = pyg_on_tile(model, x, np.ones((41, 53), np.float32))
    assert np.abs(whole - expected).max() <= 1e-4


def test_gpu_asked_for_but_absent_fails_loudly(exported, settings):
    _, path = exported
    gpu = Predictor(settings_with(settings, device="cuda"), model_path=path)
    with pytest.raises(PredictorError, match="serving.device is 'cuda' but"):
        gpu.model()
    fallback = Predictor(settings_with(settings, device="cuda", allow_cpu_fallback=True), model_path=path)
    assert fallback.model().providers == ["CPUExecutionProvider"]


def test_wrong_inputs_and_bad_outputs_are_refused(exported, settings):
    _, path = exported
    p = Predictor(settings, model_path=path)
    with pytest.raises(PredictorError, match="expects 7 days"):
        p.predict(np.zeros((5, 8, 8, F), np.float32))
    with pytest.raises(PredictorError, match="expects 10 features"):
        p.predict(np.zeros((7, 8, 8, 4), np.float32))
    model = p.model()
    window = [np.full((64, model.hidden), np.nan, np.float32)] * 7
    with pytest.raises(PredictorError, match="non-finite or negative values"):
        p.readout(model, window, (8, 8))


def test_missing_serving_graphs_are_reported(tmp_path, exported, settings):
    _, path = exported
    lonely = tmp_path / "model.onnx"
    lonely.write_bytes(Path(path).read_bytes())
    with pytest.raises(PredictorError, match="serving graphs"):
        Predictor(settings, model_path=lonely).model()


class FakeRegistry:
    """Stands in for training.registry.ModelRegistry: the alias can move between calls."""

    def __init__(self, paths):
        self.paths, self.champion = paths, 1

    def onnx_model_path(self, alias="champion"):
        return self.paths[self.champion], self.champion


def test_alias_is_followed_per_request(exported, settings):
    _, path = exported
    registry = FakeRegistry({1: path, 2: path})
    p = Predictor(settings, registry=registry)
    assert p.model().version == 1
    registry.champion = 2                                    # a promotion or rollback elsewhere
    assert p.model().version == 2


def test_readout_chunking_does_not_change_a_value(exported, settings):
    """The temporal graph runs on chunks of cells sized for the cache: any chunk size gives the
    same bits as one call over every cell."""
    _, path = exported
    p = Predictor(settings, model_path=path)
    model = p.model()
    rng = np.random.default_rng(3)
    window = [np.maximum(rng.normal(size=(2173, model.hidden)), 0).astype(np.float32) for _ in range(7)]
    p.TEMPORAL_CHUNK_VALUES = 1 << 30                        # one call over every cell
    whole = p.readout(model, window, (41, 53))
    one = model.temporal.run(["et"], {"z": np.stack(window)})[0].reshape(41, 53)
    np.testing.assert_array_equal(whole, one)
    p.TEMPORAL_CHUNK_VALUES = 1                              # the smallest chunk: 256 cells, 9 calls
    np.testing.assert_array_equal(p.readout(model, window, (41, 53)), whole)


def test_readout_day_scales_the_raw_quantiles_by_the_seasons_factors(tmp_path, settings):
    """A model with an interval: the three temporal outputs go through the same chunks, and the
    bounds are the raw quantiles' half-widths times the lower/upper factors of the day's season."""
    import json

    from etfuse.interval import apply_interval
    from tests.standins import SMALL_MODEL_INTERVAL, export_small_model
    p = Predictor(settings, model_path=export_small_model(tmp_path / "m"))
    model = p.model()
    assert model.outputs == ("et", "et_q05", "et_q95") and model.interval is not None
    rng = np.random.default_rng(4)
    window = [np.maximum(rng.normal(size=(600, model.hidden)), 0).astype(np.float32) for _ in range(7)]
    p.TEMPORAL_CHUNK_VALUES = 1 << 30                        # one call over every cell
    whole = p.readout_day(model, window, (20, 30), "2021-07-15")
    p.TEMPORAL_CHUNK_VALUES = 1                              # 256 cells per call: 3 calls
    chunked = p.readout_day(model, window, (20, 30), "2021-07-15")
    for name in ("et", "et_q05", "et_q95"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name))
    raw = [r.reshape(20, 30) for r in model.temporal.run(list(model.outputs), {"z": np.stack(window)})]
    jja = json.loads(SMALL_MODEL_INTERVAL)["factors"]["JJA"]
    lower, upper = apply_interval(raw[0], raw[1], raw[2], jja)
    np.testing.assert_allclose(whole.et_q05, lower, rtol=1e-6)
    np.testing.assert_allclose(whole.et_q95, upper, rtol=1e-6)
    assert (whole.et_q05 <= whole.et).all() and (whole.et <= whole.et_q95).all()
    assert p.readout_day(model, window, (20, 30), "2021-01-15").et_q95.mean() < whole.et_q95.mean()   # DJF 1.5 < JJA 2.0
