"""MODIS MOD11A1 (Terra, daily 1 km) daytime land surface temperature -> ``lst`` [K].

Two input forms (design.md §3), told apart by their first bytes, never by the file name:

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
"""

from __future__ import annotations

import math
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.cf import annotate
from etfuse.errors import NoOverlapError, SourceFormatError
from etfuse.sources import register
from etfuse.sources.common import clip, region_bbox
from etfuse.sources.modis_tiles import tile_name

HDF4_MAGIC = b"\x0e\x03\x13\x01"
TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")   # classic TIFF and BigTIFF

#: MOD11A1 ``LST_Day_1km`` packing (MOD11 user guide, collections 6 and 6.1).
LST_SCALE = 0.02
LST_FILL = 0
LST_VALID_RANGE = (7500, 65535)
#: Radius of the sphere of the MODIS sinusoidal grid [m].
SPHERE_RADIUS_M = 6371007.181

LST_NAME = "LST_Day_1km"
QC_NAME = "QC_Day"

_PRODUCT_RE = re.compile(r"^(M[OYC]D\d\d[A-Z]\d)", re.I)
_DOY_RE = re.compile(r"(?:^|[._\-])(?:A|doy)(\d{4})(\d{3})(?=$|[._\-])")


# --------------------------------------------------------------------------- small helpers
def qc_mask(qc: np.ndarray, *, accept_other_quality: bool, max_lst_error_flag: int) -> np.ndarray:
    """True where a ``QC_Day`` byte lets the LST value through (see the module docstring)."""
    qc = np.asarray(qc).astype(np.uint8, copy=False)
    mandatory = qc & 0b11
    error_flag = (qc >> 6) & 0b11
    keep = mandatory == 0
    if accept_other_quality:
        keep |= (mandatory == 1) & (error_flag <= max_lst_error_flag)
    return keep


def _qc_rule_text(settings) -> str:
    m = settings.modis
    if m.accept_other_quality:
        return (f"QC_Day mandatory QA 00 kept; 01 kept when LST error flag <= {m.max_lst_error_flag}; "
                "10/11 (not produced) dropped")
    return "QC_Day mandatory QA 00 kept; 01, 10 and 11 dropped"


def _file_kind(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise SourceFormatError(path, "the file is empty", expected="a MOD11A1 HDF4-EOS tile or a WGS84 GeoTIFF",
                                found="0 bytes", hint="the download was probably interrupted; fetch the file again")
    if len(head) < 4:
        raise SourceFormatError(path, "the file is too short to be HDF4 or TIFF", found=f"{len(head)} bytes {head!r}",
                                hint="the file is truncated; fetch it again")
    if head[:4] == HDF4_MAGIC:
        return "hdf4-eos"
    if head[:4] in TIFF_MAGICS:
        return "geotiff"
    raise SourceFormatError(path, "unrecognised file format", expected="HDF4 (MOD11A1 tile) or GeoTIFF",
                            found=f"first bytes {head!r}",
                            hint="an HTML error page or a NetCDF/HDF5 export is not a MOD11A1 delivery")


def _day_from_name(path: Path) -> pd.Timestamp | None:
    m = _DOY_RE.search(path.name)
    if not m:
        return None
    year, doy = int(m.group(1)), int(m.group(2))
    if not 1 <= doy <= (366 if pd.Timestamp(year=year, month=12, day=31).day_of_year == 366 else 365):
        raise SourceFormatError(path, "the day of year in the file name does not exist", expected="A%Y%j or doy%Y%j",
                                found=m.group(0).strip("._-"))
    return pd.Timestamp(year=year, month=1, day=1) + pd.Timedelta(days=doy - 1)


def _check_product(short_name: str | None, path: Path) -> None:
    """Refuse other MODIS products with the same field names (MOD11A2 8-day, MYD11A1 Aqua 13:30)."""
    if short_name is None:
        m = _PRODUCT_RE.match(path.name)
        short_name = m.group(1) if m else None
    if short_name is not None and short_name.upper() != "MOD11A1":
        raise SourceFormatError(path, "not a MOD11A1 (Terra daily) file", expected="SHORTNAME MOD11A1",
                                found=short_name,
                                hint="MOD11A2 is an 8-day composite and MYD11A1 is Aqua (13:30 overpass); "
                                     "this source is Terra daily daytime LST")


def _parse_date(text: str, path: Path, where: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(text.strip()).normalize()
    except (ValueError, TypeError) as exc:
        raise SourceFormatError(path, f"{where} is not a date", expected="YYYY-MM-DD", found=repr(text)) from exc


def _target_axes(settings, bbox) -> tuple[np.ndarray, np.ndarray, float]:
    """Cell centres (lat descending, lon ascending) on the target lattice inside the clipping box."""
    west, south, east, north = region_bbox(settings, bbox)
    r = settings.region
    res = float(settings.modis.grid_resolution_deg or r.resolution_deg)
    eps = 1e-9
    k_lon = np.arange(math.ceil((west - r.lon_min) / res - 0.5 - eps),
                      math.floor((east - r.lon_min) / res - 0.5 + eps) + 1)
    k_lat = np.arange(math.ceil((r.lat_max - north) / res - 0.5 - eps),
                      math.floor((r.lat_max - south) / res - 0.5 + eps) + 1)
    if k_lon.size == 0 or k_lat.size == 0:
        raise NoOverlapError(None, "the clipping box holds no cell centre of the output grid",
                             expected=f"a box wider than one {res:g} deg cell",
                             found=f"lon {west:g}..{east:g}, lat {south:g}..{north:g}")
    lon = (r.lon_min + (k_lon + 0.5) * res).astype(np.float64)
    lat = (r.lat_max - (k_lat + 0.5) * res).astype(np.float64)
    return lat, lon, res


def _days_ns(days: Sequence[pd.Timestamp]) -> np.ndarray:
    return np.array([np.datetime64(d.strftime("%Y-%m-%d"), "ns") for d in days], dtype="datetime64[ns]")


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


def read_tile(path: Path | str, settings) -> SinusoidalTile:
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


def _read_hdf(paths: Sequence[Path], settings, bbox) -> xr.Dataset:
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


def _check_tiff_complete(path: Path) -> None:
    """Raise if the first TIFF directory or the pixel blocks it points to lie beyond the file's end.

    GDAL opens a cut-off GeoTIFF without complaint when an older copy of its directory survives
    (it then reports no CRS, or fails only on reading), so truncation is checked here first.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
        endian = "<" if head[:2] == b"II" else ">"
        big = head[2:4] in (b"+\x00", b"\x00+")
        if len(head) < (16 if big else 8):
            raise SourceFormatError(path, "the TIFF header is incomplete", found=f"{size} bytes",
                                    hint="the file is truncated; fetch it again")
        # classic TIFF: 4-byte offsets, 12-byte entries; BigTIFF: 8-byte offsets, 20-byte entries
        if big:
            (offset,) = struct.unpack(endian + "Q", head[8:16])
            count_fmt, entry_fmt, entry_len, value_len = "Q", "HHQ", 20, 8
        else:
            (offset,) = struct.unpack(endian + "I", head[4:8])
            count_fmt, entry_fmt, entry_len, value_len = "H", "HHI", 12, 4
        count_len = struct.calcsize(count_fmt)
        if offset + count_len > size:
            raise SourceFormatError(path, "the TIFF directory lies beyond the end of the file",
                                    expected=f"at least {offset + count_len} bytes", found=f"{size} bytes",
                                    hint="the file is truncated; fetch it again")
        f.seek(offset)
        (n,) = struct.unpack(endian + count_fmt, f.read(count_len))
        table = f.read(n * entry_len)
        if len(table) < n * entry_len:
            raise SourceFormatError(path, "the TIFF directory is cut off", found=f"{size} bytes",
                                    hint="the file is truncated; fetch it again")
        sizes = {2: 1, 3: 2, 4: 4, 16: 8}   # BYTE/ASCII, SHORT, LONG, LONG8
        arrays: dict[int, np.ndarray] = {}
        for k in range(n):
            tag, typ, cnt = struct.unpack(endian + entry_fmt, table[k * entry_len:k * entry_len + 4 + value_len])
            if tag not in (273, 279, 324, 325) or typ not in sizes:   # strip/tile offsets and byte counts
                continue
            raw = table[k * entry_len + 4 + value_len:(k + 1) * entry_len]
            nbytes = sizes[typ] * cnt
            if nbytes > value_len:
                (where,) = struct.unpack(endian + ("Q" if big else "I"), raw)
                if where + nbytes > size:
                    raise SourceFormatError(path, "the TIFF block table lies beyond the end of the file",
                                            found=f"{size} bytes", hint="the file is truncated; fetch it again")
                f.seek(where)
                raw = f.read(nbytes)
            dtype = np.dtype({1: "u1", 2: "u2", 4: "u4", 8: "u8"}[sizes[typ]]).newbyteorder(endian)
            arrays[tag] = np.frombuffer(raw[:nbytes], dtype=dtype).astype(np.int64)
    for offsets_tag, counts_tag in ((273, 279), (324, 325)):
        if offsets_tag in arrays and counts_tag in arrays and arrays[offsets_tag].size == arrays[counts_tag].size:
            used = arrays[counts_tag] > 0
            end = int((arrays[offsets_tag][used] + arrays[counts_tag][used]).max()) if used.any() else 0
            if end > size:
                raise SourceFormatError(path, "pixel data runs beyond the end of the file",
                                        expected=f"at least {end} bytes", found=f"{size} bytes",
                                        hint="the file is truncated; fetch it again")


def _read_geotiff(path: Path, settings, box) -> _Raster:
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


def _read_geotiffs(paths: Sequence[Path], settings, bbox) -> xr.Dataset:
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


# --------------------------------------------------------------------------- the reader
@register("modis", "grid", "MODIS MOD11A1 daily daytime LST (HDF4-EOS sinusoidal tiles or WGS84 GeoTIFF) -> lst")
def read_modis(paths: Sequence[Path], *, settings, bbox=None) -> xr.Dataset:
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
