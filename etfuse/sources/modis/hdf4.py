"""MOD11A1 HDF4-EOS tiles on the MODIS sinusoidal grid: read a tile, resample tiles to the target
lattice, mosaic a day (see etfuse/sources/modis/__init__.py)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.errors import NoOverlapError, SourceFormatError
from etfuse.sources.common import region_bbox
from etfuse.sources.modis_tiles import tile_name
from etfuse.sources.modis.formats import (LST_FILL, LST_NAME, LST_SCALE, LST_VALID_RANGE, QC_NAME, SPHERE_RADIUS_M,
                                          _check_product, _day_from_name, _days_ns, _parse_date, _target_axes, qc_mask)
from etfuse.settings import Settings


# --------------------------------------------------------------------------- HDF4-EOS tiles
@dataclass(frozen=True)
class SinusoidalTile:
    """One MOD11A1 tile: its day, its place on the sinusoidal grid and its screened LST [K]."""

    path: Path
    day: pd.Timestamp
    ulx: float
    uly: float
    lrx: float
    lry: float
    radius: float
    lst: np.ndarray          # (YDim, XDim) float32, NaN where fill, out of range or rejected by QC

    @property
    def shape(self) -> tuple[int, int]:
        return self.lst.shape  # type: ignore[return-value]

    @property
    def pixel_size(self) -> tuple[float, float]:
        """(x, y) pixel size [m]."""
        ny, nx = self.shape
        return (self.lrx - self.ulx) / nx, (self.uly - self.lry) / ny


def _global_attr(sd, name: str) -> Any:
    """One global attribute, or None; read singly (pyhdf decodes strings char by char, and a tile
    also carries ~30 kB of ArchiveMetadata the reader does not need)."""
    from pyhdf.error import HDF4Error

    try:
        attr = sd.attr(name)
        attr.index()
    except (HDF4Error, AttributeError):
        return None
    return attr.get()


def _joined_attr(sd, base: str) -> str | None:
    """HDF-EOS splits long ODL text over ``<base>.0``, ``<base>.1`` ...; join them, drop NUL padding."""
    parts = []
    while (value := _global_attr(sd, f"{base}.{len(parts)}")) is not None:
        parts.append(str(value))
    return "".join(parts).replace("\x00", "") if parts else None


def _odl_value(block: str, key: str) -> str | None:
    m = re.search(rf"^\s*{re.escape(key)}\s*=\s*(.+?)\s*$", block, re.M)
    return m.group(1) if m else None


def _numbers(text: str | None) -> list[float]:
    if text is None:
        return []
    return [float(v) for v in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", text)]


def _grid_geometry(struct: str, path: Path) -> dict[str, Any]:
    grids = re.findall(r"GROUP\s*=\s*(GRID_\d+)\s*\n(.*?)END_GROUP\s*=\s*\1\b", struct, re.S)
    if not grids:
        raise SourceFormatError(path, "StructMetadata.0 has no HDF-EOS grid", expected="GROUP=GridStructure/GRID_1",
                                found=struct[:120].strip() or "empty text")
    block = next((b for _, b in grids if re.search(rf'DataFieldName\s*=\s*"{LST_NAME}"', b)), None)
    if block is None:
        if len(grids) > 1:
            raise SourceFormatError(path, f"no HDF-EOS grid lists the field {LST_NAME}",
                                    found=[g for g, _ in grids])
        block = grids[0][1]
    geo: dict[str, Any] = {}
    for key in ("XDim", "YDim"):
        value = _odl_value(block, key)
        if value is None or not value.strip().isdigit():
            raise SourceFormatError(path, f"StructMetadata.0 lacks {key}", expected="an integer", found=value)
        geo[key] = int(value)
    for key in ("UpperLeftPointMtrs", "LowerRightMtrs"):
        values = _numbers(_odl_value(block, key))
        if len(values) != 2:
            raise SourceFormatError(path, f"StructMetadata.0 lacks {key}", expected="(x,y) in metres",
                                    found=_odl_value(block, key))
        geo[key] = values
    projection = (_odl_value(block, "Projection") or "").strip()
    if projection != "GCTP_SNSOID":
        raise SourceFormatError(path, "not on the MODIS sinusoidal grid", expected="Projection=GCTP_SNSOID",
                                found=f"Projection={projection or '(missing)'}")
    params = _numbers(_odl_value(block, "ProjParams"))
    if not params or params[0] <= 0:
        raise SourceFormatError(path, "StructMetadata.0 gives no sphere radius", expected="ProjParams=(6371007.181,...)",
                                found=_odl_value(block, "ProjParams"))
    if abs(params[0] - SPHERE_RADIUS_M) > 1.0:
        raise SourceFormatError(path, "unexpected sinusoidal sphere radius", expected=f"{SPHERE_RADIUS_M} m",
                                found=f"{params[0]} m", hint="the reader knows only the MODIS sphere; refusing to guess")
    geo["radius"] = params[0]
    origin = (_odl_value(block, "GridOrigin") or "HDFE_GD_UL").strip()
    if origin != "HDFE_GD_UL":
        raise SourceFormatError(path, "unsupported grid origin", expected="GridOrigin=HDFE_GD_UL", found=origin)
    (ulx, uly), (lrx, lry) = geo["UpperLeftPointMtrs"], geo["LowerRightMtrs"]
    if not (lrx > ulx and uly > lry):
        raise SourceFormatError(path, "tile corners are not upper-left / lower-right",
                                found=f"UpperLeftPointMtrs=({ulx},{uly}) LowerRightMtrs=({lrx},{lry})")
    return geo


def _day_from_core(core: str | None, path: Path) -> pd.Timestamp | None:
    if not core:
        return None
    m = re.search(r"OBJECT\s*=\s*RANGEBEGINNINGDATE\b(.*?)END_OBJECT\s*=\s*RANGEBEGINNINGDATE", core, re.S)
    if not m:
        return None
    value = re.search(r"VALUE\s*=\s*\"?([^\"\n]+)\"?", m.group(1))
    if not value:
        return None
    return _parse_date(value.group(1), path, "CoreMetadata.0 RANGEBEGINNINGDATE")


def _check_lst_attrs(attrs: dict[str, Any], path: Path) -> tuple[float, int, tuple[float, float]]:
    """The file's own packing, cross-checked with MOD11A1's known one; never guessed."""
    def one(name: str) -> Any:
        if name not in attrs:
            raise SourceFormatError(path, f"missing attribute {name!r}", variable=LST_NAME,
                                    expected=f"{name} as in MOD11A1 (scale_factor 0.02, _FillValue 0)",
                                    hint="the reader does not assume packing a file does not state")
        value = attrs[name]
        return value[0] if isinstance(value, (list, tuple)) and len(value) == 1 else value

    scale = float(one("scale_factor"))
    if not math.isclose(scale, LST_SCALE, rel_tol=1e-6):
        raise SourceFormatError(path, "unexpected scale_factor", variable=LST_NAME, expected=LST_SCALE, found=scale)
    fill = one("_FillValue")
    if float(fill) != LST_FILL:
        raise SourceFormatError(path, "unexpected _FillValue", variable=LST_NAME, expected=LST_FILL, found=fill)
    offset = float(attrs.get("add_offset", 0.0) or 0.0)
    if offset != 0.0:
        raise SourceFormatError(path, "unexpected add_offset", variable=LST_NAME, expected=0, found=offset)
    units = attrs.get("units")
    if units is not None and str(units).strip() != "K":
        raise SourceFormatError(path, "unexpected units", variable=LST_NAME, expected="'K'", found=repr(units))
    valid = attrs.get("valid_range")
    if valid is not None:
        valid = tuple(float(v) for v in np.atleast_1d(valid))
        if valid != tuple(float(v) for v in LST_VALID_RANGE):
            raise SourceFormatError(path, "unexpected valid_range", variable=LST_NAME,
                                    expected=list(LST_VALID_RANGE), found=list(valid))
    else:
        valid = tuple(float(v) for v in LST_VALID_RANGE)
    return scale, int(fill), valid  # type: ignore[return-value]


def read_tile(path: Path | str, settings: Settings) -> SinusoidalTile:
    """One MOD11A1 HDF4-EOS tile, screened by QC; raises ``SourceFormatError`` if it is not one."""
    from pyhdf.SD import SD, SDC
    from pyhdf.error import HDF4Error

    path = Path(path)
    try:
        sd = SD(str(path), SDC.READ)
    except HDF4Error as exc:
        raise SourceFormatError(path, f"cannot be opened as HDF4 ({exc})",
                                hint="the file may be truncated; fetch it again") from exc
    try:
        try:
            datasets = sd.datasets()
            struct = _joined_attr(sd, "StructMetadata")
            core = _joined_attr(sd, "CoreMetadata")
        except HDF4Error as exc:
            raise SourceFormatError(path, f"HDF4 directory unreadable ({exc})", hint="the file may be truncated") from exc
        if struct is None:
            raise SourceFormatError(path, "not an HDF-EOS file", expected="the global attribute StructMetadata.0",
                                    found="no StructMetadata.0")
        geo = _grid_geometry(struct, path)
        short = re.search(r"OBJECT\s*=\s*SHORTNAME\b.*?VALUE\s*=\s*\"?([A-Za-z0-9_]+)", core or "", re.S)
        _check_product(short.group(1) if short else None, path)
        day = _day_from_core(core, path) or _day_from_name(path)
        if day is None:
            raise SourceFormatError(path, "cannot tell the day of the tile",
                                    expected="CoreMetadata.0 RANGEBEGINNINGDATE or A%Y%j in the file name",
                                    found="neither")
        for name in (LST_NAME, QC_NAME):
            if name not in datasets:
                raise SourceFormatError(path, f"missing dataset {name!r}", expected=f"{LST_NAME} and {QC_NAME} (MOD11A1)",
                                        found=sorted(datasets))
        shape = (geo["YDim"], geo["XDim"])
        arrays = {}
        lst_attrs: dict[str, Any] = {}
        for name, dtype in ((LST_NAME, np.uint16), (QC_NAME, np.uint8)):
            dims, dshape = datasets[name][0], tuple(datasets[name][1])
            if dshape != shape:
                raise SourceFormatError(path, "dataset shape differs from the grid", variable=name,
                                        expected=f"(YDim, XDim) = {shape}", found=dshape)
            if not str(dims[0]).startswith("YDim"):
                raise SourceFormatError(path, "unexpected dimension order", variable=name,
                                        expected="(YDim, XDim)", found=dims)
            try:
                sds = sd.select(name)
                if name == LST_NAME:
                    lst_attrs = sds.attributes()
                data = sds.get()
                sds.endaccess()
            except HDF4Error as exc:
                raise SourceFormatError(path, f"cannot read the data ({exc})", variable=name,
                                        hint="the file may be truncated; fetch it again") from exc
            if data.dtype != dtype:
                raise SourceFormatError(path, "unexpected data type", variable=name,
                                        expected=np.dtype(dtype).name, found=data.dtype.name)
            arrays[name] = data
    finally:
        sd.end()
    scale, fill, (vmin, vmax) = _check_lst_attrs(lst_attrs, path)
    raw = arrays[LST_NAME]
    keep = (raw != fill) & (raw >= vmin) & (raw <= vmax)
    keep &= qc_mask(arrays[QC_NAME], accept_other_quality=settings.modis.accept_other_quality,
                    max_lst_error_flag=settings.modis.max_lst_error_flag)
    lst = np.where(keep, raw.astype(np.float32) * np.float32(scale), np.float32(np.nan)).astype(np.float32)
    (ulx, uly), (lrx, lry) = geo["UpperLeftPointMtrs"], geo["LowerRightMtrs"]
    return SinusoidalTile(path, day, ulx, uly, lrx, lry, geo["radius"], lst)


def resample_tiles(tiles: Sequence[SinusoidalTile], lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mosaic tiles (all of one day) onto cell centres ``lat`` x ``lon`` [degrees].

    Returns ``(lst (lat, lon) float32, covered (len(tiles),) bool)``: each cell takes the value of
    the tile pixel holding its centre; cells outside every tile stay NaN.
    """
    out = np.full((lat.size, lon.size), np.nan, dtype=np.float32)
    covered = np.zeros(len(tiles), dtype=bool)
    lat_rad = np.deg2rad(lat)
    lon_rad = np.deg2rad((lon + 180.0) % 360.0 - 180.0)
    cos_lat = np.cos(lat_rad)
    for t, tile in enumerate(tiles):
        ny, nx = tile.shape
        px, py = tile.pixel_size
        y = tile.radius * lat_rad
        prow = np.floor((tile.uly - y) / py)
        rows = np.flatnonzero((prow >= 0) & (prow < ny))
        if rows.size == 0:
            continue
        x = (tile.radius * cos_lat[rows])[:, None] * lon_rad[None, :]
        pcol = np.floor((x - tile.ulx) / px)
        inside = (pcol >= 0) & (pcol < nx)
        if not inside.any():
            continue
        covered[t] = True
        cols_any = np.flatnonzero(inside.any(axis=0))
        c0, c1 = cols_any[0], cols_any[-1] + 1
        inside = inside[:, c0:c1]
        pc = np.clip(pcol[:, c0:c1], 0, nx - 1).astype(np.intp)
        values = tile.lst[prow[rows].astype(np.intp)[:, None], pc]
        block = out[rows, c0:c1]
        take = inside & np.isnan(block)
        block[take] = values[take]
        out[rows, c0:c1] = block
    return out, covered


def _read_hdf(paths: Sequence[Path], settings: Settings, bbox) -> xr.Dataset:
    lat, lon, res = _target_axes(settings, bbox)
    tiles = [read_tile(p, settings) for p in paths]
    by_day: dict[pd.Timestamp, list[SinusoidalTile]] = {}
    for tile in tiles:
        same = [o for o in by_day.get(tile.day, []) if (o.ulx, o.uly, o.shape) == (tile.ulx, tile.uly, tile.shape)]
        if same:
            raise SourceFormatError(tile.path, "the same tile and day is given twice",
                                    found=f"{same[0].path.name} and {tile.path.name} for {tile.day:%Y-%m-%d}",
                                    hint="keep one version of each tile per day (e.g. drop the older collection)")
        by_day.setdefault(tile.day, []).append(tile)
    days = sorted(by_day)
    data = np.empty((len(days), lat.size, lon.size), dtype=np.float32)
    west, south, east, north = region_bbox(settings, bbox)
    names: dict[pd.Timestamp, list[str | None]] = {}
    for k, day in enumerate(days):
        data[k], covered = resample_tiles(by_day[day], lat, lon)
        names[day] = [tile_name(t.ulx, t.uly, t.lrx, t.lry) for t, c in zip(by_day[day], covered) if c]
        if not covered.any():
            names = ", ".join(t.path.name for t in by_day[day])
            raise NoOverlapError(by_day[day][0].path, "the file does not overlap the region",
                                 expected=f"data inside lon {west:g}..{east:g}, lat {south:g}..{north:g}",
                                 found=f"no cell centre falls in the tile(s) of {day:%Y-%m-%d}: {names}",
                                 hint="check the tile numbers (Qinghai: h24v05, h25v05, h26v05) or the region/--bbox")
    ds = xr.Dataset({"lst": (("time", "lat", "lon"), data)},
                    coords={"time": _days_ns(days), "lat": lat, "lon": lon})
    if all(names):        # which tiles each day holds: the store assembles a day tile by tile (etfuse/mosaic.py)
        ds = ds.assign_coords(modis_tiles=("time", [" ".join(sorted(n for n in names[d] if n)) for d in days]))
    ds.attrs["modis_grid_resolution_deg"] = res
    ds.attrs["modis_resampling"] = ("inverse mapping of lat/lon cell centres to the sinusoidal tile pixel "
                                    "holding them (nearest pixel)")
    return ds

