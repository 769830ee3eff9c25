"""MODIS MOD11A1 (Terra, daily 1 km) daytime land surface temperature -> ``lst`` [K].

Two input forms (docs/data-formats.md), told apart by their first bytes, never by the file name:

* **HDF4-EOS tiles** on the MODIS sinusoidal grid (the LP DAAC delivery; Qinghai needs h25v05,
  h26v05 and a corner of h24v05).  The tile's position comes from its own ``StructMetadata.0``
  (``UpperLeftPointMtrs``, ``LowerRightMtrs``, ``XDim``/``YDim``, ``Projection=GCTP_SNSOID``,
  sphere radius ``ProjParams[0]`` = 6371007.181 m); the day from ``CoreMetadata.0``
  ``RANGEBEGINNINGDATE`` (or ``A%Y%j`` in the file name).  Tiles are resampled to a regular lat/lon
  grid whose cell centres lie on the target grid's lattice (``lon_min + (k + 0.5) * res``,
  ``lat_max - (k + 0.5) * res``) over the region plus margin, by inverse mapping: each output cell
  centre goes to sinusoidal ``x = R * lon * cos(lat)``, ``y = R * lat`` and takes the value of the
  tile pixel holding that point.  Tiles of one day are mosaicked.
* **WGS84 GeoTIFFs** (after a reprojection, e.g. AppEEARS or ``gdalwarp``): the native grid is kept
  and clipped to the region plus margin; EPSG:4326 and a north-up transform are required.

Values: ``LST_Day_1km`` uint16 * 0.02 K, fill 0, valid 7500..65535 (the file's own ``scale_factor``
and ``_FillValue`` are used and must agree with these).  ``QC_Day``: bits 0-1 mandatory QA (00 good,
01 other quality, 10/11 not produced), bits 6-7 LST error flag (0 <= 1 K, 1 <= 2 K, 2 <= 3 K,
3 > 3 K).  Kept: 00 always; 01 when ``settings.modis.accept_other_quality`` and the error flag is at
most ``settings.modis.max_lst_error_flag``.  Everything else is NaN, as are cells outside any tile.

The package: ``formats.py`` (magic bytes, packing, QC rule, names and checks shared by both forms),
``hdf4.py`` (sinusoidal tiles), ``geotiff.py`` (WGS84 rasters); the reader is here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import xarray as xr

from etfuse.cf import annotate
from etfuse.errors import SourceFormatError
from etfuse.sources import register
from etfuse.sources.modis.formats import (HDF4_MAGIC, LST_FILL, LST_NAME, LST_SCALE, LST_VALID_RANGE, QC_NAME,
                                          SPHERE_RADIUS_M, TIFF_MAGICS, _file_kind, _qc_rule_text, qc_mask)
from etfuse.sources.modis.geotiff import _read_geotiffs
from etfuse.sources.modis.hdf4 import SinusoidalTile, _read_hdf, read_tile, resample_tiles
from etfuse.settings import Settings

__all__ = ["read_modis", "read_tile", "resample_tiles", "qc_mask", "SinusoidalTile", "LST_NAME", "QC_NAME",
           "LST_SCALE", "LST_FILL", "LST_VALID_RANGE", "SPHERE_RADIUS_M", "HDF4_MAGIC", "TIFF_MAGICS"]


# --------------------------------------------------------------------------- the reader
@register("modis", "grid", "MODIS MOD11A1 daily daytime LST (HDF4-EOS sinusoidal tiles or WGS84 GeoTIFF) -> lst")
def read_modis(paths: Sequence[Path], *, settings: Settings, bbox=None) -> xr.Dataset:
    """Daily daytime LST [K] from MOD11A1 files: one time step per day, tiles of a day mosaicked.

    HDF4 tiles are resampled to the target lattice over the region plus margin (or ``bbox``);
    GeoTIFFs keep their own grid, clipped.  A call takes one form only.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("read_modis needs at least one file")
    kinds = {p: _file_kind(p) for p in paths}
    forms = sorted(set(kinds.values()))
    if len(forms) > 1:
        raise SourceFormatError(paths[0], "HDF4-EOS tiles and GeoTIFFs mixed in one read",
                                expected="files of one form", found=", ".join(f"{p.name}: {k}" for p, k in kinds.items()),
                                hint="harmonise each form separately")
    form = forms[0]
    ds = _read_hdf(paths, settings, bbox) if form == "hdf4-eos" else _read_geotiffs(paths, settings, bbox)
    ds.attrs["modis_qc_rule"] = _qc_rule_text(settings)
    return annotate(ds, source="modis", source_files=" ".join(p.name for p in paths), modis_format=form,
                    title="MODIS MOD11A1 daytime land surface temperature harmonised by etfuse")
