"""serving.wiring.ServingParts: the registry, predictor and product store wired once, lazily."""

from __future__ import annotations

from serving.predictor import Predictor
from serving.product import ProductStore
from serving.wiring import ServingParts
from training.registry import ModelRegistry


def test_parts_are_built_on_first_use_and_kept(settings):
    parts = ServingParts(settings)
    assert "product" not in vars(parts) and "registry" not in vars(parts)      # nothing opened yet
    product = parts.product
    assert isinstance(product, ProductStore) and parts.product is product
    assert "registry" not in vars(parts) and "predictor" not in vars(parts)  # the product alone opens no registry
    predictor = parts.predictor
    assert isinstance(predictor, Predictor) and isinstance(parts.registry, ModelRegistry)
    assert predictor.registry is parts.registry and parts.predictor is predictor


def test_a_given_registry_is_the_predictors(settings):
    registry = ModelRegistry(settings)
    parts = ServingParts(settings, registry=registry)
    assert parts.registry is registry and parts.predictor.registry is registry


def test_reconcile_false_opens_the_store_without_reconciling(settings):
    ProductStore(settings)                                         # creates the ledger
    stray = settings.folder("product") / "daily" / "2021" / "etfuse_et_2021-07-15.nc"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not a netcdf file")                        # reconcile would move it to corrupt/
    ServingParts(settings, reconcile=False).product
    assert stray.exists()
    ServingParts(settings).product
    assert not stray.exists() and any((settings.folder("product") / "corrupt").iterdir())
