"""Writers of MODIS MOD11A1 (daily 1 km LST) files in the layouts the reader meets in operations.

* ``write_mod11a1_hdf``: an HDF4 file shaped like a real MOD11A1 HDF4-EOS tile (checked against the
  collection 6 tile h14v09 of 2019-11-01 in ``../shared/realdata/modis``): the SDS ``LST_Day_1km``
  (uint16, ``scale_factor`` 0.02, ``_FillValue`` 0, ``valid_range`` [7500, 65535], units K) and
  ``QC_Day`` (uint8), both deflate-compressed with the EOS dimension names, and the global ODL
  attributes ``HDFEOSVersion``, ``StructMetadata.0`` (GridStructure, GCTP_SNSOID, NUL padded to
  32000 characters like the real file), ``CoreMetadata.0`` (``RANGEBEGINNINGDATE`` ...) and
  ``ArchiveMetadata.0``.  Written with pyhdf.SD only, so the HDF-EOS Vgroup objects a real tile
  also carries are absent: readers going through the HDF-EOS GD API (e.g. GDAL's HDF4 driver in
  EOS mode) may not open these files; pyhdf.SD readers see what they see in a real tile.
* ``write_mod11a1_geotiff``: a WGS84 GeoTIFF on a regular lat/lon grid, as after a reprojection
  (e.g. by AppEEARS or ``gdalwarp``): band 1 ``LST_Day_1km`` (scale 0.02 K, nodata 0), band 2
  ``QC_Day``.  A GeoTIFF holds one data type for all its bands, so the QC band is stored as uint16
  (values 0..255) next to the uint16 LST band; the dataset-wide nodata 0 applies to LST only (QC 0
  means "good").

Temperatures given to the writers are in K; NaN means cloud / not produced (written as fill 0 with
QC ``0b10`` "not produced" unless a QC array is given).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

#: Radius of the sphere of the MODIS sinusoidal grid [m] (GCTP_SNSOID ProjParams[0]).
SPHERE_RADIUS_M = 6371007.181
#: Width and height of one MODIS sinusoidal tile [m]: the globe's 36 x 18 tiles.
TILE_SIZE_M = 2 * math.pi * SPHERE_RADIUS_M / 36
TILE_PIXELS = 1200
LST_SCALE = 0.02
LST_FILL = 0
LST_VALID_RANGE = (7500, 65535)
QC_NOT_PRODUCED = 0b10

GRID_NAME = "MODIS_Grid_Daily_1km_LST"
_PRODUCTION = "2019306084028"


def tile_bounds_m(h: int, v: int) -> tuple[float, float, float, float]:
    """(upper-left x, upper-left y, lower-right x, lower-right y) of tile ``h``/``v`` [m]."""
    if not (0 <= h <= 35 and 0 <= v <= 17):
        raise ValueError(f"MODIS tile numbers run h 0..35 and v 0..17, got h{h} v{v}")
    ulx = (h - 18) * TILE_SIZE_M
    uly = (9 - v) * TILE_SIZE_M
    return ulx, uly, ulx + TILE_SIZE_M, uly - TILE_SIZE_M


def sinusoidal_tile_latlon(h: int, v: int, n: int = TILE_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude [degrees] of the pixel centres of tile ``h``/``v`` (each ``(n, n)``).

    Rows run north to south, columns west to east.  Pixels outside the sinusoidal projection's
    valid area (beyond +-180 degrees of longitude, in the corner tiles) get NaN longitude.
    """
    ulx, uly, _, _ = tile_bounds_m(h, v)
    px = TILE_SIZE_M / n
    y = uly - (np.arange(n) + 0.5) * px
    x = ulx + (np.arange(n) + 0.5) * px
    lat_rad = y / SPHERE_RADIUS_M
    lon_rad = x[None, :] / (SPHERE_RADIUS_M * np.cos(lat_rad)[:, None])
    lon = np.rad2deg(lon_rad)
    lon = np.where(np.abs(lon) <= 180.0, lon, np.nan)
    lat = np.broadcast_to(np.rad2deg(lat_rad)[:, None], (n, n)).copy()
    return lat, lon


def mod11a1_name(day: Any, h: int, v: int, *, collection: str = "061", ext: str = "hdf") -> str:
    """The LP DAAC granule name, e.g. ``MOD11A1.A2019305.h25v05.061.2019306084028.hdf``."""
    d = pd.Timestamp(day)
    return f"MOD11A1.A{d.year:04d}{d.day_of_year:03d}.h{h:02d}v{v:02d}.{collection}.{_PRODUCTION}.{ext}"


def _raw_lst(lst_k: np.ndarray) -> np.ndarray:
    """K -> packed uint16 (value / 0.02, rounded); NaN -> fill 0; clipped to the uint16 range."""
    lst_k = np.asarray(lst_k, dtype=np.float64)
    raw = np.where(np.isfinite(lst_k), np.rint(np.nan_to_num(lst_k) / LST_SCALE), LST_FILL)
    return np.clip(raw, 0, 65535).astype(np.uint16)


def _default_qc(lst_k: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(lst_k), 0, QC_NOT_PRODUCED).astype(np.uint8)


def _check_qc(qc: Any, shape: tuple[int, ...]) -> np.ndarray:
    qc = np.asarray(qc)
    if qc.shape != shape:
        raise ValueError(f"qc must have the shape of lst_k {shape}, got {qc.shape}")
    if qc.size and (qc.min() < 0 or qc.max() > 255):
        raise ValueError("qc values must be 0..255 (one byte of QC bits)")
    return qc.astype(np.uint8)


def _day(day: Any) -> pd.Timestamp:
    d = pd.Timestamp(day)
    if d != d.normalize():
        raise ValueError(f"day must be a calendar day, got {day!r}")
    return d


# --------------------------------------------------------------------------- HDF4-EOS
def _struct_metadata(ulx: float, uly: float, lrx: float, lry: float, n: int) -> str:
    fields = ""
    for i, (name, dtype) in enumerate((("LST_Day_1km", "DFNT_UINT16"), ("QC_Day", "DFNT_UINT8")), start=1):
        fields += (f"\t\t\tOBJECT=DataField_{i}\n"
                   f"\t\t\t\tDataFieldName=\"{name}\"\n"
                   f"\t\t\t\tDataType={dtype}\n"
                   f"\t\t\t\tDimList=(\"YDim\",\"XDim\")\n"
                   f"\t\t\tEND_OBJECT=DataField_{i}\n")
    text = ("GROUP=SwathStructure\nEND_GROUP=SwathStructure\n"
            "GROUP=GridStructure\n"
            "\tGROUP=GRID_1\n"
            f"\t\tGridName=\"{GRID_NAME}\"\n"
            f"\t\tXDim={n}\n"
            f"\t\tYDim={n}\n"
            f"\t\tUpperLeftPointMtrs=({ulx:.6f},{uly:.6f})\n"
            f"\t\tLowerRightMtrs=({lrx:.6f},{lry:.6f})\n"
            "\t\tProjection=GCTP_SNSOID\n"
            f"\t\tProjParams=({SPHERE_RADIUS_M:.6f},0,0,0,0,0,0,0,86400,0,0,0,0)\n"
            "\t\tSphereCode=-1\n"
            "\t\tGridOrigin=HDFE_GD_UL\n"
            "\t\tGROUP=Dimension\n\t\tEND_GROUP=Dimension\n"
            "\t\tGROUP=DataField\n"
            f"{fields}"
            "\t\tEND_GROUP=DataField\n"
            "\t\tGROUP=MergedFields\n\t\tEND_GROUP=MergedFields\n"
            "\tEND_GROUP=GRID_1\n"
            "END_GROUP=GridStructure\n"
            "GROUP=PointStructure\nEND_GROUP=PointStructure\n"
            "END\n")
    return text + "\x00" * (32000 - len(text))


def _odl_object(name: str, value: str, indent: int, num_val: int = 1) -> str:
    pad = " " * indent
    return (f"{pad}OBJECT                 = {name}\n"
            f"{pad}  NUM_VAL              = {num_val}\n"
            f"{pad}  VALUE                = {value}\n"
            f"{pad}END_OBJECT             = {name}\n\n")


def _core_metadata(day: pd.Timestamp, h: int, v: int, granule: str, collection: str) -> str:
    d = day.strftime("%Y-%m-%d")
    text = "\nGROUP                  = INVENTORYMETADATA\n  GROUPTYPE            = MASTERGROUP\n\n"
    text += "  GROUP                  = ECSDATAGRANULE\n\n"
    text += _odl_object("LOCALGRANULEID", f'"{granule}"', 4)
    text += _odl_object("PRODUCTIONDATETIME", f'"{(day + pd.Timedelta(days=1)).strftime("%Y-%m-%d")}T08:40:28.000Z"', 4)
    text += _odl_object("DAYNIGHTFLAG", '"Both"', 4)
    text += "  END_GROUP              = ECSDATAGRANULE\n\n"
    text += "  GROUP                  = COLLECTIONDESCRIPTIONCLASS\n\n"
    text += _odl_object("VERSIONID", str(int(collection)), 4)
    text += _odl_object("SHORTNAME", '"MOD11A1"', 4)
    text += "  END_GROUP              = COLLECTIONDESCRIPTIONCLASS\n\n"
    text += "  GROUP                  = RANGEDATETIME\n\n"
    text += _odl_object("RANGEENDINGDATE", f'"{d}"', 4)
    text += _odl_object("RANGEENDINGTIME", '"23:59:59"', 4)
    text += _odl_object("RANGEBEGINNINGDATE", f'"{d}"', 4)
    text += _odl_object("RANGEBEGINNINGTIME", '"00:00:00"', 4)
    text += "  END_GROUP              = RANGEDATETIME\n\n"
    text += "  GROUP                  = ASSOCIATEDPLATFORMINSTRUMENTSENSOR\n\n"
    text += _odl_object("ASSOCIATEDPLATFORMSHORTNAME", '"Terra"', 4)
    text += _odl_object("ASSOCIATEDSENSORSHORTNAME", '"MODIS"', 4)
    text += "  END_GROUP              = ASSOCIATEDPLATFORMINSTRUMENTSENSOR\n\n"
    text += "END_GROUP              = INVENTORYMETADATA\n\nEND\n"
    return text


def _archive_metadata(h: int, v: int) -> str:
    text = "\nGROUP                  = ARCHIVEDMETADATA\n  GROUPTYPE            = MASTERGROUP\n\n"
    text += "  GROUP                  = TILEINFO\n\n"
    text += _odl_object("HORIZONTALTILENUMBER", f'"{h:02d}"', 4)
    text += _odl_object("VERTICALTILENUMBER", f'"{v:02d}"', 4)
    text += "  END_GROUP              = TILEINFO\n\n"
    text += "END_GROUP              = ARCHIVEDMETADATA\n\nEND\n"
    return text


def write_mod11a1_hdf(path: Path | str, *, day: Any, h: int, v: int, lst_k: np.ndarray,
                      qc: np.ndarray | None = None, lst_attrs: Mapping[str, Any] | None = None,
                      core_metadata: bool = True, collection: str = "061") -> Path:
    """Write one MOD11A1 tile ``h``/``v`` for ``day``.

    ``lst_k`` is ``(1200, 1200)`` [K] on the tile's pixel grid (see ``sinusoidal_tile_latlon``);
    NaN -> fill 0.  ``qc`` defaults to 0 (good) where ``lst_k`` is finite and 0b10 (not produced)
    where it is NaN.  Test knobs: ``lst_attrs`` overrides attributes of ``LST_Day_1km`` (a value of
    None drops the attribute); ``core_metadata=False`` leaves out ``CoreMetadata.0``.
    """
    from pyhdf.SD import SD, SDC

    path = Path(path)
    day = _day(day)
    lst_k = np.asarray(lst_k, dtype=np.float64)
    shape = (TILE_PIXELS, TILE_PIXELS)
    if lst_k.shape != shape:
        raise ValueError(f"lst_k must be {shape} (the tile's pixel grid), got {lst_k.shape}")
    qc_arr = _default_qc(lst_k) if qc is None else _check_qc(qc, shape)
    ulx, uly, lrx, lry = tile_bounds_m(h, v)

    attrs: dict[str, tuple[int, Any]] = {
        "long_name": (SDC.CHAR8, "Daily daytime 1km grid Land-surface Temperature"),
        "units": (SDC.CHAR8, "K"),
        "Number Type": (SDC.CHAR8, "uint16"),
        "valid_range": (SDC.UINT16, list(LST_VALID_RANGE)),
        "_FillValue": (SDC.UINT16, LST_FILL),
        "LST": (SDC.CHAR8, "LST data * scale_factor"),
        "scale_factor": (SDC.FLOAT64, LST_SCALE),
        "scale_factor_err": (SDC.FLOAT64, 0.0),
        "add_offset_err": (SDC.FLOAT64, 0.0),
        "calibrated_nt": (SDC.INT32, 5),
    }
    for key, value in (lst_attrs or {}).items():
        if value is None:
            attrs.pop(key, None)
        elif isinstance(value, str):
            attrs[key] = (SDC.CHAR8, value)
        elif isinstance(value, (list, tuple)):
            attrs[key] = (SDC.UINT16 if all(isinstance(x, int) for x in value) else SDC.FLOAT64, list(value))
        elif isinstance(value, (int, np.integer)) and key != "scale_factor":
            attrs[key] = (SDC.UINT16, int(value))
        else:
            attrs[key] = (SDC.FLOAT64, float(value))

    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    sd = SD(str(part), SDC.WRITE | SDC.CREATE | SDC.TRUNC)
    try:
        granule = mod11a1_name(day, h, v, collection=collection)
        sd.attr("HDFEOSVersion").set(SDC.CHAR8, "HDFEOS_V2.19")
        sd.attr("StructMetadata.0").set(SDC.CHAR8, _struct_metadata(ulx, uly, lrx, lry, TILE_PIXELS))
        if core_metadata:
            sd.attr("CoreMetadata.0").set(SDC.CHAR8, _core_metadata(day, h, v, granule, collection))
        sd.attr("ArchiveMetadata.0").set(SDC.CHAR8, _archive_metadata(h, v))
        sd.attr("identifier_product_doi").set(SDC.CHAR8, f"10.5067/MODIS/MOD11A1.{collection}")
        sd.attr("identifier_product_doi_authority").set(SDC.CHAR8, "http://dx.doi.org")

        lst = sd.create("LST_Day_1km", SDC.UINT16, shape)
        lst.dim(0).setname(f"YDim:{GRID_NAME}")
        lst.dim(1).setname(f"XDim:{GRID_NAME}")
        lst.setcompress(SDC.COMP_DEFLATE, 1)
        for key, (nt, value) in attrs.items():
            lst.attr(key).set(nt, value)
        lst[:] = _raw_lst(lst_k)
        lst.endaccess()

        q = sd.create("QC_Day", SDC.UINT8, shape)
        q.dim(0).setname(f"YDim:{GRID_NAME}")
        q.dim(1).setname(f"XDim:{GRID_NAME}")
        q.setcompress(SDC.COMP_DEFLATE, 1)
        q.attr("long_name").set(SDC.CHAR8, "Quality control for daytime LST and emissivity")
        q.attr("Number Type").set(SDC.CHAR8, "uint8")
        q.attr("valid_range").set(SDC.UINT8, [0, 255])
        q[:] = qc_arr
        q.endaccess()
    finally:
        sd.end()
    part.replace(path)
    return path


# --------------------------------------------------------------------------- GeoTIFF
def write_mod11a1_geotiff(path: Path | str, *, day: Any, lat: np.ndarray, lon: np.ndarray,
                          lst_k: np.ndarray, qc: np.ndarray | None = None, crs: str = "EPSG:4326",
                          day_tag: bool = True) -> Path:
    """Write MOD11A1 daytime LST on a regular lat/lon grid as a GeoTIFF.

    ``lat``/``lon`` are the 1-D cell centres [degrees] (lat ascending or descending; the file is
    north-up), ``lst_k`` is ``(lat, lon)`` [K] with NaN for cloud / no data.  Band 1
    ``LST_Day_1km`` uint16 (scale 0.02, offset 0, nodata 0, units K), band 2 ``QC_Day`` (QC byte
    values, stored as uint16 because a GeoTIFF has one data type).  The day goes into the tag
    ``RANGEBEGINNINGDATE=YYYY-MM-DD`` (``day_tag=False`` leaves it out).  ``crs`` exists for tests
    of the reader's CRS check.
    """
    import rasterio
    from rasterio.transform import Affine

    path = Path(path)
    day = _day(day)
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    lst_k = np.asarray(lst_k, dtype=np.float64)
    if lat.ndim != 1 or lon.ndim != 1 or lat.size < 2 or lon.size < 2:
        raise ValueError("lat and lon must be 1-D cell centres with at least two values each")
    if lst_k.shape != (lat.size, lon.size):
        raise ValueError(f"lst_k must be (lat, lon) = {(lat.size, lon.size)}, got {lst_k.shape}")
    qc_arr = _default_qc(lst_k) if qc is None else _check_qc(qc, lst_k.shape)
    if lat[0] < lat[-1]:
        lat, lst_k, qc_arr = lat[::-1], lst_k[::-1], qc_arr[::-1]
    dlat = float(lat[0] - lat[-1]) / (lat.size - 1)
    dlon = float(lon[-1] - lon[0]) / (lon.size - 1)
    for name, axis, step in (("lat", -lat, dlat), ("lon", lon, dlon)):
        if step <= 0 or np.max(np.abs(np.diff(axis) - step)) > 1e-6 * step:
            raise ValueError(f"{name} must be a regular, strictly monotonic axis")
    transform = Affine(dlon, 0.0, float(lon[0]) - dlon / 2, 0.0, -dlat, float(lat[0]) + dlat / 2)

    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    profile = dict(driver="GTiff", width=lon.size, height=lat.size, count=2, dtype="uint16", crs=crs,
                   transform=transform, nodata=LST_FILL, compress="deflate")
    with rasterio.open(part, "w", **profile) as dst:
        dst.write(_raw_lst(lst_k), 1)
        dst.write(qc_arr.astype(np.uint16), 2)
        dst.set_band_description(1, "LST_Day_1km")
        dst.set_band_description(2, "QC_Day")
        dst.scales = (LST_SCALE, 1.0)
        dst.offsets = (0.0, 0.0)
        dst.units = ("K", "")
        tags = {"SHORTNAME": "MOD11A1", "COLLECTION": "061"}
        if day_tag:
            tags["RANGEBEGINNINGDATE"] = day.strftime("%Y-%m-%d")
        dst.update_tags(**tags)
        dst.update_tags(1, long_name="Daily daytime 1km grid Land-surface Temperature",
                        valid_range="7500,65535", scale_factor=str(LST_SCALE), _FillValue="0")
        dst.update_tags(2, long_name="Quality control for daytime LST and emissivity")
    part.replace(path)
    return path


def doy_name(day: Any, suffix: str = "aid0001.tif") -> str:
    """An AppEEARS-style GeoTIFF name, e.g. ``MOD11A1.061_LST_Day_1km_doy2019305_aid0001.tif``."""
    d = pd.Timestamp(day)
    return f"MOD11A1.061_LST_Day_1km_doy{d.year:04d}{d.day_of_year:03d}_{suffix}"


__all__ = ["SPHERE_RADIUS_M", "TILE_SIZE_M", "TILE_PIXELS", "LST_SCALE", "LST_FILL", "LST_VALID_RANGE",
           "QC_NOT_PRODUCED", "tile_bounds_m", "sinusoidal_tile_latlon", "mod11a1_name", "doy_name",
           "write_mod11a1_hdf", "write_mod11a1_geotiff"]
