"""``etfuse evaluate``: usage errors exit 2 before any work; the protocol's report on a store."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from flows.cli import app


def _config(tmp_path, settings) -> str:
    path = tmp_path / "etfuse.yaml"
    path.write_text(yaml.safe_dump({"home": str(settings.home), "region": "test"}))
    return str(path)


def test_unknown_variant_is_a_usage_error(tmp_path, settings):
    result = CliRunner().invoke(app, ["--config", _config(tmp_path, settings), "evaluate", "--variants", "gcn_gru,nope"])
    assert result.exit_code == 2
    assert "unknown variant" in result.output and "no_graph" in result.output


def test_evaluate_is_registered_with_its_options():
    result = CliRunner().invoke(app, ["evaluate", "--help"])
    assert result.exit_code == 0
    for option in ("--champion", "--variants", "--truth", "--out"):
        assert option in result.output


def test_champion_and_product_together_is_a_usage_error(tmp_path, settings):
    result = CliRunner().invoke(app, ["--config", _config(tmp_path, settings), "evaluate", "--champion", "--product"])
    assert result.exit_code == 2 and "two different reports" in result.output


def test_product_scored_at_stations_end_to_end(small_world, tmp_path, monkeypatch):
    """Days written to the product (a constant 2 mm field) are read back at every station cell and
    scored; days the product does not hold are left out; no registry: training status unknown."""
    import hashlib

    import numpy as np
    import pandas as pd

    from etfuse.harmonise import harmonise_into_store
    from etfuse.settings import load_settings
    from etfuse.store import HarmonisedStore
    from serving.product import ProductStore
    from tests.conftest import SMALL_WORLD, _clear_etfuse_environment

    _clear_etfuse_environment(monkeypatch)
    w, s, e, n = SMALL_WORLD["bbox"]
    config = {"home": str(tmp_path / "home"), "window_days": 5,
              "region": {"name": "small", "lon_min": w, "lon_max": e, "lat_min": s, "lat_max": n,
                         "resolution_deg": SMALL_WORLD["resolution_deg"], "margin_deg": SMALL_WORLD["margin_deg"]},
              "static": {"elevation_file": str(small_world / "static" / "elevation.nc")},
              "evaluation": {"bootstrap_samples": 50}}
    settings = load_settings(**config)
    store = HarmonisedStore(settings.harmonised)
    for source in ("era5land", "gleam", "modis", "cma", "stations"):
        for path in sorted((small_world / "landing" / source).glob("*")):
            harmonise_into_store(source, path, store, settings=settings)
    product = ProductStore(settings)
    written = pd.date_range("2021-06-20", "2021-07-05")
    for day in written:
        product.write_day(day, np.full(product.grid.shape, 2.0, np.float32), model_version=1, status="final",
                          sources_used=["era5land", "gleam"], fingerprint=hashlib.sha256(str(day).encode()).hexdigest(), quicklook=False)
    path = tmp_path / "etfuse.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["--config", str(path), "evaluate", "--product", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "the product at stations and towers" in result.output and "v1" in result.output
    days = pd.read_csv(out / "station_days.csv", parse_dates=["date"])
    held = days.dropna(subset=["product"])
    assert len(held) > 0 and (held["product"] == 2.0).all()
    assert set(held["date"]) <= set(written) and days.loc[~days["date"].isin(written), "product"].isna().all()
    text = (out / "report.md").read_text()
    scored = held.dropna(subset=["obs", "gleam", "era5land"])
    rmse = float(np.sqrt(np.mean((scored["product"] - scored["obs"]) ** 2)))
    assert f"{rmse:.3f}" in text or f"{rmse:.2f}" in text
    assert "not training stations" in text
