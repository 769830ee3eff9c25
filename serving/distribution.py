"""What happens to a product day after it is stored: its STAC item, and its Zarr region.

Called by :meth:`serving.product.ProductStore.write_day` under the day's year lock after each
written or replaced day.  A failure here is logged, never raised: the NetCDF day is stored (the
truth), and ``etfuse distribution rebuild`` re-derives the catalogue and the Zarr stores from it.
"""

from __future__ import annotations

import logging

import pandas as pd

from serving import stac, zarr_store

log = logging.getLogger(__name__)


def publish_day(store, day: pd.Timestamp) -> None:
    """Update the STAC catalogue and (when enabled) the Zarr store for one stored ``day``."""
    settings = store.settings
    dist = settings.distribution
    if dist.stac:
        try:
            stac.update_day(settings, store, day)
        except Exception:  # noqa: BLE001 - the day is stored; the catalogue can be rebuilt
            log.exception("product %s: the STAC item could not be written (etfuse distribution rebuild)",
                          f"{day:%Y-%m-%d}")
    if dist.zarr:
        try:
            day_ds = store.read_day(day)
            if day_ds is not None:
                zarr_store.write_day(settings, store.grid, store.region_name, day_ds, store.metadata)
        except Exception:  # noqa: BLE001
            log.exception("product %s: the Zarr region write failed (etfuse distribution rebuild)", f"{day:%Y-%m-%d}")
