"""The serving trio in one place: the model registry, the predictor on its champion, and the
product store, wired the same way for the CLI, the flows and the API.

Each part is built on first use and then kept, so a caller that needs only the registry and the
predictor (the API) opens no product store, and the order in which a caller touches them is the
order in which they are built (opening a product store reconciles its ledger; building a
registry reaches MLflow only when asked something).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from etfuse.settings import Settings
    from serving.predictor import Predictor
    from serving.product import ProductStore
    from training.registry import ModelRegistry

__all__ = ["ServingParts"]


class ServingParts:
    """Registry, predictor and product store of one settings object.

    ``registry`` reuses an existing ModelRegistry; ``reconcile=False`` opens the product store
    without reconciling its ledger (parallel backfill workers: the parent reconciled it).
    """

    def __init__(self, settings: Settings, *, registry: ModelRegistry | None = None, reconcile: bool = True) -> None:
        self.settings = settings
        self.reconcile = reconcile
        if registry is not None:
            self.registry = registry

    @cached_property
    def registry(self) -> ModelRegistry:
        from training.registry import ModelRegistry
        return ModelRegistry(self.settings)

    @cached_property
    def predictor(self) -> Predictor:
        from serving.predictor import Predictor
        return Predictor(self.settings, registry=self.registry)

    @cached_property
    def product(self) -> ProductStore:
        from serving.product import ProductStore
        return ProductStore(self.settings, reconcile=self.reconcile)
