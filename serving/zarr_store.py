"""The product as Zarr v3 stores, one per year, written day by day with region writes.

``<zarr_url>/etfuse_et_<YYYY>.zarr`` (``distribution.zarr_url``: a local folder, default
``<product>/zarr``, or ``s3://bucket/prefix`` on any S3 store, SeaweedFS in compose) holds the
same variables and CF attributes as the NetCDF product files, on a time axis of every day of the
year.  The first day written in a year creates the store's metadata only (lazy dask template,
``compute=False``: no chunk is written); each day is then a region write of its time index, so a
day costs the chunks it touches and never a rewrite of the year.  Days not (yet) written read as
NaN ``et`` with ``product_status`` 0 (no product) and ``model_version`` 0.  After each write the
root attributes (``date_modified``, ``history``) are updated and the metadata re-consolidated, so
``xarray.open_zarr(url, consolidated=True)`` opens a store with one read.

Writers of a year must be serialised: the product store calls :func:`write_day` under its year
lock (a single host).  Chunks default to 8 days x 128 x 128 cells (bench/zarr_io.py measures the
choice: a point's year reads 46 chunks, a day's map 77).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.clock import utcnow
from etfuse.settings import Settings
from etfuse.interval import BOUND_NAMES
from serving.cf_product import bound_attributes, global_attributes, iso_utc

log = logging.getLogger(__name__)

#: Zarr writes consolidated metadata although the v3 spec has not adopted it (zarr-python warns);
#: xarray, zarr-python and fsspec readers all use it.
_QUIET = [("ignore", "Consolidated metadata is currently not part", UserWarning)]


def zarr_root(settings: Settings) -> str:
    url = settings.distribution.zarr_url
    return url.rstrip("/") if url else str(Path(settings.folder("product")) / "zarr")


def year_url(settings: Settings, year: int) -> str:
    return f"{zarr_root(settings)}/etfuse_et_{int(year):04d}.zarr"


def storage_options(settings: Settings, url: str) -> dict | None:
    """fsspec options for ``s3://`` URLs (endpoint and credentials from settings, else the AWS_* env)."""
    if not url.startswith("s3://"):
        return None
    dist = settings.distribution
    options: dict = {}
    if dist.s3_endpoint_url:
        options["client_kwargs"] = {"endpoint_url": dist.s3_endpoint_url}
    key = dist.s3_access_key_id or os.environ.get("AWS_ACCESS_KEY_ID")
    secret = dist.s3_secret_access_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        options.update(key=key, secret=secret)
    return options


def _exists(url: str, options: dict | None) -> bool:
    import zarr
    try:
        zarr.open_group(url, mode="r", storage_options=options)
        return True
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeNotFoundError):
        return False


def _template(day_ds: xr.Dataset, year: int, chunks: tuple[int, int, int], attrs: dict) -> tuple[xr.Dataset, dict]:
    """The year's dataset (lazy, fill values) and its encoding, shaped after one stored day."""
    import dask.array as da
    days = pd.date_range(f"{year:04d}-01-01", f"{year:04d}-12-31", freq="D")
    ds = xr.Dataset(coords={"time": ("time", days, day_ds["time"].attrs)}, attrs=attrs)
    ds = ds.assign_coords(lat=day_ds["lat"], lon=day_ds["lon"])
    encoding: dict = {"time": {"units": "days since 1970-01-01 00:00:00", "calendar": "standard", "dtype": "float64"}}
    for name, var in day_ds.data_vars.items():
        if "time" not in var.dims:
            ds[name] = var
            continue
        shape = (len(days),) + var.shape[1:]
        if name == "time_bnds":
            edges = np.stack([days.values, (days + pd.Timedelta(days=1)).values], axis=1)
            ds[name] = (var.dims, edges, var.attrs)
            encoding[name] = {"units": "days since 1970-01-01 00:00:00", "calendar": "standard", "dtype": "float64"}
            continue
        if var.dtype.kind == "O":          # the fingerprint: variable-length UTF-8
            ds[name] = (var.dims, np.full(shape, "", dtype=object), var.attrs)
            continue
        fill = np.nan if var.dtype.kind == "f" else 0
        var_chunks = (chunks[0],) + tuple(min(c, n) for c, n in zip(chunks[1:], var.shape[1:]))
        ds[name] = (var.dims, da.full(shape, fill, dtype=var.dtype, chunks=var_chunks), var.attrs)
        encoding[name] = {"chunks": var_chunks}
    return ds, encoding


def with_bounds(day_ds: xr.Dataset) -> xr.Dataset:
    """The day with ``et_q05``/``et_q95`` always: NaN for a day of a model without an interval, so
    a year's store holds them whichever day created it, and a day rewritten by an older model
    (after a rollback) clears its stale bounds."""
    out = day_ds.copy(deep=False)
    out["et"].attrs = dict(out["et"].attrs)
    for name in BOUND_NAMES:
        if name not in out:
            placeholder = xr.full_like(out["et"], np.nan)
            placeholder.attrs = bound_attributes(name)
            out = out.assign({name: placeholder})
    ancillary = out["et"].attrs.get("ancillary_variables", "").split()
    if not set(BOUND_NAMES) <= set(ancillary):
        out["et"].attrs["ancillary_variables"] = " ".join([a for a in ancillary if a not in BOUND_NAMES] + list(BOUND_NAMES))
    return out


def write_day(settings: Settings, grid, region_name: str, day_ds: xr.Dataset, metadata=None) -> str:
    """Region-write one stored product day (``day_ds``: the loaded daily file) into its year's store."""
    import zarr
    day_ds = with_bounds(day_ds)
    day = pd.Timestamp(day_ds["time"].values[0])
    url = year_url(settings, day.year)
    options = storage_options(settings, url)
    now = utcnow()
    with warnings.catch_warnings():
        for action, message, category in _QUIET:
            warnings.filterwarnings(action, message=message, category=category)
        if not _exists(url, options):
            start = pd.Timestamp(f"{day.year:04d}-01-01")
            attrs = global_attributes(grid, region_name=region_name, ident=f"etfuse_et_{day.year:04d}_zarr",
                                      period_label=f"{day.year:04d}", start=start,
                                      end_exclusive=start + pd.DateOffset(years=1), model_versions=[],
                                      history=f"{iso_utc(now)} etfuse zarr: store created", created=now,
                                      modified=now, metadata=metadata)
            template, encoding = _template(day_ds, day.year, settings.distribution.zarr_chunks, attrs)
            template.to_zarr(url, mode="w-", compute=False, zarr_format=3, consolidated=True, encoding=encoding,
                             storage_options=options)
            log.info("zarr: created %s", url)
        index = int((day - pd.Timestamp(f"{day.year:04d}-01-01")).days)
        group = zarr.open_group(url, mode="r", storage_options=options)
        missing = [n for n in BOUND_NAMES if n not in group]
        if missing:                    # a store created before the interval: it keeps ET only
            log.warning("zarr: %s has no %s (created before the interval); writing ET only", url, missing)
            day_ds = day_ds.drop_vars(missing)
        one = day_ds.drop_vars([n for n in day_ds.variables if "time" not in day_ds[n].dims])
        one = one.drop_vars(["time", "time_bnds"], errors="ignore")
        one.attrs = {}
        for name in one.variables:
            one[name].attrs = {}
            one[name].encoding = {}
        one.to_zarr(url, region={"time": slice(index, index + 1)}, zarr_format=3, storage_options=options)
        group = zarr.open_group(url, mode="r+", storage_options=options)
        versions = sorted({int(v) for v in np.asarray(group["model_version"][:]) if v > 0})
        group.attrs.update({"date_modified": iso_utc(now), "model_versions": ", ".join(map(str, versions)),
                            "history": f"{group.attrs.get('history', '')}\n{iso_utc(now)} etfuse zarr: "
                                       f"wrote {day:%Y-%m-%d}".strip()})
        zarr.consolidate_metadata(group.store)
    return url


def open_year(settings: Settings, year: int) -> xr.Dataset:
    """The year's store as xarray opens it (consolidated metadata, CF decoding)."""
    url = year_url(settings, year)
    with warnings.catch_warnings():
        for action, message, category in _QUIET:
            warnings.filterwarnings(action, message=message, category=category)
        return xr.open_zarr(url, consolidated=True, storage_options=storage_options(settings, url))
