"""MOD11A1 as WGS84 GeoTIFFs (AppEEARS, gdalwarp): read bands and packing, clip to the region,
stack the days (see etfuse/sources/modis/__init__.py)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.errors import NoOverlapError, SourceFormatError
from etfuse.sources.common import clip, region_bbox
from etfuse.sources.modis.formats import (LST_FILL, LST_NAME, LST_SCALE, LST_VALID_RANGE, QC_NAME, _check_product, _check_tiff_complete,
                                          _day_from_name, _days_ns, _parse_date, qc_mask)
from etfuse.settings import Settings


# --------------------------------------------------------------------------- GeoTIFF
@dataclass(frozen=True)
class _Raster:
    path: Path
    day: pd.Timestamp
    transform: tuple[float, float, float, float]   # (a, c, e, f): lon step, west edge, lat step (<0), north edge
    row0: int                                      # first row / column read (window into the file)
    col0: int
    lst: np.ndarray
    qc_applied: bool


def _band_index(descriptions: Sequence[str | None], name: str) -> int | None:
    for i, d in enumerate(descriptions):
        if d and d.strip() == name:
            return i
    return None


def _geotiff_day(tags: dict[str, str], path: Path) -> pd.Timestamp:
    day = None
    if tags.get("RANGEBEGINNINGDATE"):
        day = _parse_date(tags["RANGEBEGINNINGDATE"], path, "the RANGEBEGINNINGDATE tag")
    day = day or _day_from_name(path)
    if day is None:
        raise SourceFormatError(path, "cannot tell the day of the GeoTIFF",
                                expected="a RANGEBEGINNINGDATE tag, or A%Y%j / doy%Y%j in the file name",
                                found="neither")
    return day


def _packing(src, band: int, path: Path) -> tuple[float, float]:
    """(scale, offset) of band ``band`` (0-based): GDAL's band scale/offset, or, when those are unset,
    ``scale_factor``/``add_offset`` metadata tags of the band or of the dataset (as some conversions
    leave them).  Two places that state different packings are an error, never a guess."""
    scale, offset = float(src.scales[band]), float(src.offsets[band])
    stated = scale != 1.0 or offset != 0.0
    for where, tags in (("band", src.tags(band + 1)), ("dataset", src.tags())):
        if "scale_factor" not in tags and "add_offset" not in tags:
            continue
        try:
            t_scale = float(tags.get("scale_factor", 1.0))
            t_offset = float(tags.get("add_offset", 0.0))
        except ValueError as exc:
            raise SourceFormatError(path, f"{where} metadata packing is not a number", variable=LST_NAME,
                                    expected="scale_factor / add_offset as numbers",
                                    found=f"scale_factor={tags.get('scale_factor')!r}, "
                                          f"add_offset={tags.get('add_offset')!r}") from exc
        if not stated:
            scale, offset, stated = t_scale, t_offset, True
        elif not (math.isclose(t_scale, scale, rel_tol=1e-6) and math.isclose(t_offset, offset, abs_tol=1e-9)):
            raise SourceFormatError(path, "the GeoTIFF states two different packings", variable=LST_NAME,
                                    expected="one scale/offset", found=f"scale {scale:g}, offset {offset:g} and "
                                    f"{where} tags scale_factor={t_scale:g}, add_offset={t_offset:g}")
    return scale, offset



def _read_geotiff(path: Path, settings: Settings, box) -> _Raster:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError
    from rasterio.windows import Window

    _check_tiff_complete(path)
    try:
        # NotGeoreferencedWarning: reported below as an error ("no CRS") instead
        with warnings.catch_warnings(action="ignore", category=NotGeoreferencedWarning), rasterio.open(path) as src:
            if src.crs is None:
                raise SourceFormatError(path, "the GeoTIFF has no CRS", expected="EPSG:4326 (WGS84 lat/lon)",
                                        found="no CRS")
            epsg = src.crs.to_epsg()
            if epsg != 4326:
                raise SourceFormatError(path, "the GeoTIFF is not in WGS84 lat/lon", expected="EPSG:4326",
                                        found=src.crs.to_string(),
                                        hint="reproject to EPSG:4326 or deliver the HDF4 sinusoidal tiles")
            t = src.transform
            if t.b != 0 or t.d != 0:
                raise SourceFormatError(path, "rotated or sheared geotransform", expected="a north-up grid (b = d = 0)",
                                        found=f"transform {tuple(t)[:6]}")
            if not (t.a > 0 and t.e < 0):
                raise SourceFormatError(path, "the grid is not north-up", expected="pixel width > 0 and height < 0",
                                        found=f"width {t.a}, height {t.e}")
            descriptions = src.descriptions
            li = _band_index(descriptions, LST_NAME)
            if li is None:
                first = (descriptions[0] or "").strip()
                if first and "lst" not in first.lower():
                    raise SourceFormatError(path, f"no {LST_NAME} band", expected=f"a band described {LST_NAME!r} or an "
                                            "undescribed band 1", found=f"band descriptions {list(descriptions)}")
                li = 0
            qi = _band_index(descriptions, QC_NAME)
            dtype = np.dtype(src.dtypes[li])
            scale, offset = _packing(src, li, path)
            nodata = src.nodatavals[li]
            units = (src.units[li] or "").strip()
            tags = src.tags()
            _check_product(tags.get("SHORTNAME"), path)
            day = _geotiff_day(tags, path)

            lat = t.f + (np.arange(src.height) + 0.5) * t.e
            lon = t.c + (np.arange(src.width) + 0.5) * t.a
            frame = xr.Dataset(coords={"lat": lat, "lon": lon, "row": ("lat", np.arange(src.height)),
                                       "col": ("lon", np.arange(src.width))})
            try:
                kept = clip(frame, box, path)
            except NoOverlapError as exc:
                exc.day = day  # type: ignore[attr-defined]
                raise
            rows, cols = kept["row"].values, kept["col"].values
            window = Window(int(cols[0]), int(rows[0]), int(cols.size), int(rows.size))
            raw = src.read(li + 1, window=window)
            qc = src.read(qi + 1, window=window) if qi is not None else None
    except RasterioError as exc:
        raise SourceFormatError(path, f"cannot be read as GeoTIFF ({exc})",
                                hint="the file may be truncated; fetch it again") from exc

    if np.issubdtype(dtype, np.integer):
        if not (math.isclose(scale, LST_SCALE, rel_tol=1e-6) and offset == 0.0):
            raise SourceFormatError(path, "the packed LST band has an unexpected scale/offset", variable=LST_NAME,
                                    expected=f"scale {LST_SCALE}, offset 0 (MOD11A1 packing)",
                                    found=f"scale {scale:g}, offset {offset:g}",
                                    hint="the reader does not assume packing a file does not state")
        keep = (raw != LST_FILL) & (raw >= LST_VALID_RANGE[0]) & (raw <= LST_VALID_RANGE[1])
        if nodata is not None:
            keep &= raw != nodata
        values = raw.astype(np.float32) * np.float32(scale)
    elif np.issubdtype(dtype, np.floating):
        if units not in ("K", "kelvin", "Kelvin"):
            raise SourceFormatError(path, "a floating-point LST band must state its units", variable=LST_NAME,
                                    expected="band units 'K'", found=repr(units) if units else "no units",
                                    hint="the reader does not infer units from magnitudes")
        values = (raw.astype(np.float64) * scale + offset).astype(np.float32)
        keep = np.isfinite(values) & (values >= LST_VALID_RANGE[0] * LST_SCALE) & (values <= LST_VALID_RANGE[1] * LST_SCALE)
        if nodata is not None and not np.isnan(nodata):
            keep &= raw != nodata
    else:
        raise SourceFormatError(path, "unsupported LST band type", variable=LST_NAME,
                                expected="uint16 (scale 0.02) or float in K", found=dtype.name)
    if qc is not None:
        if not np.issubdtype(qc.dtype, np.integer) or (qc.size and (qc.min() < 0 or qc.max() > 255)):
            raise SourceFormatError(path, "QC band values are not QC bytes", variable=QC_NAME,
                                    expected="integers 0..255", found=f"{qc.dtype.name} {qc.min()}..{qc.max()}")
        keep &= qc_mask(qc, accept_other_quality=settings.modis.accept_other_quality,
                        max_lst_error_flag=settings.modis.max_lst_error_flag)
    lst = np.where(keep, values, np.float32(np.nan)).astype(np.float32)

    return _Raster(path, day, (t.a, t.c, t.e, t.f), int(rows[0]), int(cols[0]), lst, qc is not None)


def _read_geotiffs(paths: Sequence[Path], settings: Settings, bbox) -> xr.Dataset:
    box = region_bbox(settings, bbox)
    rasters: list[_Raster] = []
    misses: dict[Path, NoOverlapError] = {}
    for p in paths:
        try:
            rasters.append(_read_geotiff(p, settings, box))
        except NoOverlapError as exc:
            misses[p] = exc
    if not rasters:
        raise next(iter(misses.values()))
    a0, c0, e0, f0 = rasters[0].transform
    placed = []
    for r in rasters:
        a, c, e, f = r.transform
        if not (math.isclose(a, a0, rel_tol=1e-6) and math.isclose(e, e0, rel_tol=1e-6)):
            raise SourceFormatError(r.path, "grid resolution differs from the other GeoTIFFs",
                                    expected=f"{a0:g} x {-e0:g} deg (as {rasters[0].path.name})",
                                    found=f"{a:g} x {-e:g} deg",
                                    hint="resample all GeoTIFFs to one grid before harmonising them together")
        dc, dr = (c - c0) / a0, (f - f0) / e0
        if abs(dc - round(dc)) > 1e-3 or abs(dr - round(dr)) > 1e-3:
            raise SourceFormatError(r.path, "grid is not aligned with the other GeoTIFFs",
                                    expected=f"cell edges on the lattice of {rasters[0].path.name}",
                                    found=f"offset of {dc:.3f} columns, {dr:.3f} rows")
        placed.append((r, int(round(dr)) + r.row0, int(round(dc)) + r.col0))
    # the days whose every file missed the box are an error, as for a single file
    days = sorted({r.day for r in rasters})
    for exc in misses.values():
        if getattr(exc, "day", None) not in days:
            raise exc
    seen: dict[tuple, Path] = {}
    for r, gr, gc in placed:
        key = (r.day, gr, gc, r.lst.shape)
        if key in seen:
            raise SourceFormatError(r.path, "the same grid and day is given twice",
                                    found=f"{seen[key].name} and {r.path.name} for {r.day:%Y-%m-%d}")
        seen[key] = r.path
    r_min = min(gr for _, gr, _ in placed)
    c_min = min(gc for _, _, gc in placed)
    r_max = max(gr + r.lst.shape[0] for r, gr, _ in placed)
    c_max = max(gc + r.lst.shape[1] for r, _, gc in placed)
    data = np.full((len(days), r_max - r_min, c_max - c_min), np.nan, dtype=np.float32)
    for r, gr, gc in placed:
        k = days.index(r.day)
        block = data[k, gr - r_min:gr - r_min + r.lst.shape[0], gc - c_min:gc - c_min + r.lst.shape[1]]
        take = np.isnan(block)
        block[take] = r.lst[take]
    lat = f0 + (np.arange(r_min, r_max) + 0.5) * e0
    lon = c0 + (np.arange(c_min, c_max) + 0.5) * a0
    ds = xr.Dataset({"lst": (("time", "lat", "lon"), data)},
                    coords={"time": _days_ns(days), "lat": lat.astype(np.float64), "lon": lon.astype(np.float64)})
    ds.attrs["modis_grid_resolution_deg"] = (float(f"{a0:.10g}") if math.isclose(a0, -e0, rel_tol=1e-6)
                                             else f"{a0:.10g} x {-e0:.10g}")
    without_qc = [r.path.name for r in rasters if not r.qc_applied]
    if without_qc:
        ds.attrs["modis_qc_missing"] = "no QC_Day band, values taken unscreened: " + " ".join(without_qc)
    return ds

