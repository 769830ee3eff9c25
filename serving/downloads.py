"""NetCDF subsets of the product (days x box) for download, with the product's CF attributes.

A subset is written by the same writer as the product files (``cf_product.write_product_file``)
on the sub-grid of the cells whose centres lie in the box, so it opens, reads and cites exactly
like a daily or yearly file: same variables, CF-1.11/ACDD attributes, per-day provenance.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from etfuse.clock import utcnow
from etfuse.grid import TargetGrid
from etfuse.tempfiles import temporary_name
from serving.cf_product import DayProvenance, global_attributes, iso_utc, write_product_file
from serving.product import _NC_LOCK, DayNotFoundError, ProductError, ProductStore


def sub_grid(grid: TargetGrid, rows: slice, cols: slice) -> TargetGrid:
    """The grid of the cells ``rows`` x ``cols`` of ``grid`` (edges on the parent's edges)."""
    res = grid.resolution_deg
    return TargetGrid(lon_min=grid.lon_min + cols.start * res, lon_max=grid.lon_min + cols.stop * res,
                      lat_min=grid.lat_max - rows.stop * res, lat_max=grid.lat_max - rows.start * res,
                      resolution_deg=res)


def subset_size(product: ProductStore, bbox: tuple[float, float, float, float], start: date, end: date) -> tuple[int, int]:
    """(cells in the box, product days in the range)."""
    rows, cols = product.area_window(bbox)
    days = len(product.records(start, end))
    return (rows.stop - rows.start) * (cols.stop - cols.start), days


def write_subset(product: ProductStore, bbox: tuple[float, float, float, float], start: date, end: date,
                 folder: Path) -> Path:
    """Write the subset into a new temporary file under ``folder`` (the caller removes it).

    Days without a product are absent from the time axis (as in the yearly files).
    """
    records = product.records(start, end)
    if not records:
        raise ProductError(f"no product day between {start} and {end}")
    rows, cols = product.area_window(bbox)
    grid = sub_grid(product.grid, rows, cols)
    provenance = [DayProvenance(r.day, r.model_version, r.status, r.sources_used, r.fingerprint) for r in records]

    def blocks(t0: int, t1: int) -> np.ndarray:
        out = np.full((t1 - t0,) + grid.shape, np.nan, dtype=np.float32)
        for k in range(t0, t1):
            try:
                out[k - t0] = product.read_area(bbox, records[k].day)      # the store's open files
            except DayNotFoundError:
                pass                               # removed since the ledger was read: no value
        return out

    first, last = records[0].day, records[-1].day
    label = f"{first:%Y-%m-%d}..{last:%Y-%m-%d}"
    w, s, e, n = bbox
    now = utcnow()
    attrs = global_attributes(grid, region_name=product.region_name, ident=f"etfuse_et_subset_{first:%Y%m%d}_{last:%Y%m%d}",
                              period_label=label, start=first, end_exclusive=last + pd.Timedelta(days=1),
                              model_versions=[p.model_version for p in provenance],
                              history=f"{iso_utc(now)} etfuse subset: box {w:g},{s:g},{e:g},{n:g}, days {label}",
                              created=now, modified=now, metadata=product.metadata)
    folder.mkdir(parents=True, exist_ok=True)
    path = temporary_name(folder / f"etfuse_et_subset_{first:%Y%m%d}_{last:%Y%m%d}.nc")
    serving = product.settings.serving
    chunks = (1, min(64, grid.shape[0]), min(64, grid.shape[1]))
    try:
        write_product_file(path, grid, provenance, blocks, chunks=chunks, compression_level=serving.compression_level,
                           least_significant_digit=serving.least_significant_digit, global_attrs=attrs,
                           lock=_NC_LOCK)
    except BaseException:
        if path.exists():
            os.unlink(path)
        raise
    return path


def subset_bytes(product: ProductStore, bbox: tuple[float, float, float, float], start: date, end: date,
                 folder: Path) -> bytes:
    """The subset of :func:`write_subset` as bytes (what the API sends); its temporary file is removed.

    Runs on the API's render lane (serving/render_lane.py), in a worker process by default.
    """
    path = write_subset(product, bbox, start, end, folder)
    try:
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)
