"""MOD11A1 format facts and checks shared by both input forms: magic bytes, LST packing, the QC
rule, the product and day from names and metadata, the output lattice, and a TIFF directory
check that catches truncated GeoTIFFs before GDAL does (see etfuse/sources/modis/__init__.py).
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from etfuse.errors import NoOverlapError, SourceFormatError
from etfuse.settings import Settings
from etfuse.sources.common import region_bbox

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


def _qc_rule_text(settings: Settings) -> str:
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


def _target_axes(settings: Settings, bbox) -> tuple[np.ndarray, np.ndarray, float]:
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

