"""The GCN-GRU's two forms agree, and the ONNX export is scatter-free and proven equal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.nn import GCNConv

from training.export import (FORBIDDEN_OPS, ExportError, GridGcnGru, check_parity, export_onnx, graph_ops,
                             onnx_metadata, onnx_session, pyg_on_tile)
from training.model import GcnGru, king_edges

F = 10


def random_tile(rng, t=7, h=11, w=9, holes=True):
    x = rng.normal(size=(t, h, w, F)).astype(np.float32)
    mask = np.ones((h, w), np.float32)
    if holes:
        x[:, :, :3, 0] = np.nan            # a source missing on part of the tile
        x[2, 4, 4, :] = np.nan              # one cell missing everything on one day
        mask[:2, :] = 0                     # outside the region
        mask[6, 6] = 0
    return x, mask


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    m = GcnGru(np.linspace(-1, 1, F), np.linspace(0.5, 2, F), hidden=8, gcn_layers=2).eval()
    for p in m.parameters():              # non-trivial weights and biases
        torch.nn.init.normal_(p, std=0.3)
    return m


def test_king_edges_connect_eight_neighbours_and_skip_invalid_cells():
    e = king_edges(3, 3)
    assert e.shape[1] == 2 * (2 * 3 * 2 + 2 * 2 * 2)       # 12 orthogonal + 8 diagonal pairs, both directions
    centre = set(e[1][e[0] == 4])
    assert centre == {0, 1, 2, 3, 5, 6, 7, 8}
    valid = np.ones((3, 3), bool)
    valid[0, 0] = False
    assert 0 not in set(king_edges(3, 3, valid).ravel())


def test_grid_stencil_equals_pyg_gcnconv(model):
    rng = np.random.default_rng(0)
    x, mask = random_tile(rng)
    expected = pyg_on_tile(model, x, mask)
    with torch.no_grad():
        got = GridGcnGru(model)(torch.as_tensor(x[None]), torch.as_tensor(mask[None])).numpy()[0]
    valid = mask.astype(bool)
    assert np.abs(got[valid] - expected[valid]).max() < 1e-5
    assert (got[valid] >= 0).all()                         # softplus: never negative ET


def test_stencil_degree_matches_pyg_normalisation():
    """A single GCNConv vs the stencil formula on a masked grid, without the rest of the model."""
    conv = GCNConv(3, 2)
    torch.nn.init.normal_(conv.lin.weight)
    torch.nn.init.normal_(conv.bias)
    h, w = 5, 6
    mask = np.ones((h, w), np.float32)
    mask[0, :3] = 0
    x = torch.randn(h * w, 3)
    pyg = conv(x, torch.as_tensor(king_edges(h, w, mask.astype(bool)))).detach().numpy().reshape(h, w, 2)
    m = torch.as_tensor(mask)[None, None]
    deg = torch.nn.functional.conv2d(m, torch.ones(1, 1, 3, 3), padding=1)[0, 0]
    dinv = (torch.as_tensor(mask) / torch.sqrt(torch.clamp(deg, min=1)))[..., None]
    y = conv.lin(x).reshape(h, w, 2) * dinv
    y = torch.nn.functional.conv2d(y.permute(2, 0, 1)[None], torch.ones(2, 1, 3, 3), padding=1, groups=2)[0].permute(1, 2, 0)
    stencil = (y * dinv + conv.bias).detach().numpy()
    np.testing.assert_allclose(stencil[mask.astype(bool)], pyg[mask.astype(bool)], atol=1e-5)


def test_export_has_no_scatter_and_proves_parity(model, tmp_path):
    rng = np.random.default_rng(1)
    tiles = [random_tile(rng), random_tile(rng, h=7, w=20), random_tile(rng, h=5, w=5, holes=False)]
    path = tmp_path / "m.onnx"
    report = export_onnx(model, path, window_days=7, features=tuple(f"f{i}" for i in range(F)), parity_tiles=tiles,
                         metadata={"note": "test"})
    assert report.max_abs_diff_mm <= 1e-4 and report.cells_compared > 200
    ops = graph_ops(path)
    assert not ops & FORBIDDEN_OPS and "Conv" in ops and "GRU" in ops
    meta = onnx_metadata(path)
    assert meta["window_days"] == "7" and meta["receptive_field"] == "3" and meta["note"] == "test"
    # dynamic batch, height and width: a 2-tile batch of another size runs
    session = onnx_session(path)
    x, mask = random_tile(rng, h=13, w=17)
    out = session.run(["et"], {"x": np.stack([x, x]), "mask": np.stack([mask, mask])})[0]
    assert out.shape == (2, 13, 17)
    np.testing.assert_allclose(out[0][mask.astype(bool)], pyg_on_tile(model, x, mask)[mask.astype(bool)], atol=1e-4)


def test_parity_check_refuses_a_mismatching_model(model, tmp_path):
    rng = np.random.default_rng(2)
    tiles = [random_tile(rng)]
    path = tmp_path / "m.onnx"
    export_onnx(model, path, window_days=7, features=tuple(f"f{i}" for i in range(F)), parity_tiles=tiles)
    other = GcnGru(np.zeros(F), np.ones(F), hidden=8, gcn_layers=2).eval()     # different weights
    with pytest.raises(ExportError, match=r"differs from the PyG model by .* expected at most 0\.0001 mm"):
        check_parity(other, path, tiles)


def test_export_refuses_scatter_graphs(tmp_path):
    """PyG's own message passing exports to scatter ops: the check catches them."""
    import onnx
    from onnx import TensorProto, helper
    node = helper.make_node("ScatterElements", ["d", "i", "u"], ["et"], axis=0, reduction="add")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3]) for n in ("d", "u")]
                              + [helper.make_tensor_value_info("i", TensorProto.INT64, [3])],
                              [helper.make_tensor_value_info("et", TensorProto.FLOAT, [3])])
    path = tmp_path / "scatter.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ExportError, match=r"contains \['ScatterElements'\]"):
        check_parity(GcnGru(np.zeros(F), np.ones(F)), path, [])


def test_serving_graphs_carry_the_interval_outputs_with_parity(model, tmp_path):
    """The temporal serving graph returns et, et_q05 and et_q95, each equal to the PyG model's
    outputs to 1e-4 mm, ordered 0 <= q05 <= et <= q95 (the scatter-free form of the same weights)."""
    from training.export import export_serving_parts, run_parts
    rng = np.random.default_rng(5)
    tiles = [random_tile(rng), random_tile(rng, h=6, w=12, holes=False)]
    paths, report = export_serving_parts(model, tmp_path, window_days=7, n_features=F, parity_tiles=tiles)
    assert report.max_abs_diff_mm <= 1e-4
    temporal = onnx_session(paths["temporal"])
    assert [o.name for o in temporal.get_outputs()] == ["et", "et_q05", "et_q95"]
    x, mask = random_tile(rng, h=9, w=8)
    got = run_parts(onnx_session(paths["spatial"]), temporal, x, mask, outputs=("et", "et_q05", "et_q95"))
    want = pyg_on_tile(model, x, mask, interval=True)
    valid = mask.astype(bool)
    np.testing.assert_allclose(got[valid], want[valid], atol=1e-4)
    assert (got[valid][:, 1] >= 0).all() and (got[valid][:, 1] <= got[valid][:, 0]).all()
    assert (got[valid][:, 0] <= got[valid][:, 2]).all() and (got[valid][:, 2] - got[valid][:, 1]).min() > 0


def test_training_loss_fits_the_quantiles():
    """The pinball terms put the raw q05 / q95 near the 5 % / 95 % quantiles of the targets, and do
    not move the point estimate (detached): the MSE term alone fits it."""
    from training.train import training_loss
    torch.manual_seed(0)
    y = torch.randn(4000) + 3.0
    out = torch.nn.Parameter(torch.zeros(4000, 3) + torch.tensor([3.0, 3.0, 3.0]))
    opt = torch.optim.Adam([out], lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        b = out.mean(0).expand(4000, 3)           # one shared prediction per output
        training_loss(b, y).backward()
        opt.step()
    lo, et, hi = (float(out.mean(0)[k]) for k in (1, 0, 2))
    assert abs(et - float(y.mean())) < 0.05
    assert abs(lo - float(torch.quantile(y, 0.05))) < 0.1 and abs(hi - float(torch.quantile(y, 0.95))) < 0.1


def test_raw_position_is_invisible_to_the_model_unless_asked():
    """training.position_features false (the default): moving a cell's lat/lon changes nothing."""
    from etfuse.features import FEATURES
    from training.model import feature_use
    rng = np.random.default_rng(2)
    x, mask = random_tile(rng, holes=False)
    moved = x.copy()
    for name in ("lat", "lon"):
        moved[..., FEATURES.index(name)] += 3.0
    outputs = {}
    for position in (False, True):
        torch.manual_seed(0)
        m = GcnGru(np.zeros(F), np.ones(F), hidden=8, use=feature_use(FEATURES, position=position)).eval()
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.3)
        outputs[position] = (pyg_on_tile(m, x, mask), pyg_on_tile(m, moved, mask))
    np.testing.assert_array_equal(*outputs[False])
    assert np.abs(outputs[True][0] - outputs[True][1]).max() > 1e-3


def test_serving_graphs_hide_raw_position_as_the_model_does(tmp_path):
    """The serving graphs carry the encoder's unused features: with real lat/lon values in the
    inputs, their parity with the PyG model holds (the export refuses the model otherwise)."""
    from etfuse.features import FEATURES
    from training.export import export_serving_parts
    from training.model import feature_use
    torch.manual_seed(1)
    m = GcnGru(np.linspace(-1, 1, F), np.linspace(0.5, 2, F), hidden=8,
               use=feature_use(FEATURES, position=False)).eval()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    rng = np.random.default_rng(9)
    x, mask = random_tile(rng)
    x[..., FEATURES.index("lat")] = 36.0 + rng.normal(size=x.shape[:3])
    x[..., FEATURES.index("lon")] = 98.0 + rng.normal(size=x.shape[:3])
    _, report = export_serving_parts(m, tmp_path, window_days=7, n_features=F, parity_tiles=[(x, mask)])
    assert report.max_abs_diff_mm <= 1e-4
