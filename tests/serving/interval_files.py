"""Product days with the per-cell 90 % interval, as models that estimate it write them.

``with_interval`` adds ``et_q05`` and ``et_q95`` [mm day-1] (same dims, fill value and compression
as ``et``, named in ``et:ancillary_variables``) to a day the store wrote, then lets the store's
reconcile take the new file version into its ledger (the file wins).  Days written without it are
what older models leave: no such variables.
"""

from __future__ import annotations

import numpy as np

from etfuse.sources.common import file_sha256
from serving.cf_product import FILL_VALUE
from serving.product import _NC_LOCK, ProductStore


def with_interval(store: ProductStore, day, q05_mm: np.ndarray, q95_mm: np.ndarray) -> None:
    """Add the interval bounds (rows north to south, NaN = no value) to ``day``'s product file."""
    import netCDF4
    path = store.day_path(day)
    store.close_files()                  # HDF5 refuses to append to a file this process holds open
    with _NC_LOCK, netCDF4.Dataset(path, "a") as nc:
        et = nc["et"]
        for name, values, what in (("et_q05", q05_mm, "5 %"), ("et_q95", q95_mm, "95 %")):
            var = nc.createVariable(name, "f4", ("time", "lat", "lon"), zlib=True, complevel=4, shuffle=True,
                                    chunksizes=et.chunking(), fill_value=FILL_VALUE)
            var.setncatts({"long_name": f"{what} quantile of daily actual evapotranspiration (90 % interval)",
                           "units": "mm day-1", "grid_mapping": "crs", "coverage_content_type": "qualityInformation"})
            var[0] = np.where(np.isnan(values), FILL_VALUE, values).astype(np.float32)
        et.ancillary_variables = f"{et.ancillary_variables} et_q05 et_q95"
    store.reconcile()
    assert store.record(day).file_sha256 == file_sha256(path), "reconcile did not take the new file version"
