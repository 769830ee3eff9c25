"""Where the MODIS sinusoidal tiles lie: their names, their footprints on a lat/lon lattice.

LP DAAC delivers MOD11A1 as one file per tile and day.  The globe's sinusoidal plane
(``x = R * lon * cos(lat)``, ``y = R * lat``, sphere radius ``R`` = 6371007.181 m) is cut into
36 x 18 square tiles of ``T = 2 * pi * R / 36`` m; tile ``hHHvVV`` spans
``x`` in [(H - 18) T, (H - 17) T) and ``y`` in ((8 - V) T, (9 - V) T].  Tiles never overlap, so a
lat/lon cell centre belongs to exactly one tile: that is what lets a day be assembled from its
tiles in any order (etfuse/mosaic.py).  The footprint rule here is the one the reader's
``resample_tiles`` uses (a cell takes the tile pixel holding its centre).
"""

from __future__ import annotations

import math
import re

import numpy as np

from etfuse.settings import Settings

#: Radius of the sphere of the MODIS sinusoidal grid [m].
SPHERE_RADIUS_M = 6371007.181
#: Width and height of one tile [m].
TILE_SIZE_M = 2 * math.pi * SPHERE_RADIUS_M / 36
_NAME_RE = re.compile(r"^h(\d\d)v(\d\d)$")


def tile_name(ulx: float, uly: float, lrx: float, lry: float) -> str | None:
    """``hHHvVV`` of a tile from its corners [m], or None when they are not one standard tile."""
    h = (ulx / TILE_SIZE_M) + 18
    v = 9 - (uly / TILE_SIZE_M)
    hi, vi = round(h), round(v)
    tol = 1.0 / TILE_SIZE_M                                   # one metre
    if (abs(h - hi) > tol or abs(v - vi) > tol or not (0 <= hi <= 35 and 0 <= vi <= 17)
            or abs(lrx - ulx - TILE_SIZE_M) > 1.0 or abs(uly - lry - TILE_SIZE_M) > 1.0):
        return None
    return f"h{hi:02d}v{vi:02d}"


def tile_bounds_m(name: str) -> tuple[float, float, float, float]:
    """(upper-left x, upper-left y, lower-right x, lower-right y) of tile ``hHHvVV`` [m]."""
    m = _NAME_RE.match(name)
    if not m or not (0 <= int(m.group(1)) <= 35 and 0 <= int(m.group(2)) <= 17):
        raise ValueError(f"not a MODIS tile name: {name!r} (expected hHHvVV, h 00..35, v 00..17)")
    h, v = int(m.group(1)), int(m.group(2))
    ulx, uly = (h - 18) * TILE_SIZE_M, (9 - v) * TILE_SIZE_M
    return ulx, uly, ulx + TILE_SIZE_M, uly - TILE_SIZE_M


def _sinusoidal(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) [m] of the cell centres ``lat`` x ``lon`` (1-D axes [degrees]), each (lat, lon)."""
    lat_rad = np.deg2rad(np.asarray(lat, dtype=np.float64))
    lon_rad = np.deg2rad((np.asarray(lon, dtype=np.float64) + 180.0) % 360.0 - 180.0)
    x = (SPHERE_RADIUS_M * np.cos(lat_rad))[:, None] * lon_rad[None, :]
    y = np.broadcast_to((SPHERE_RADIUS_M * lat_rad)[:, None], x.shape)
    return x, y


def footprint(name: str, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """True where a cell centre of ``lat`` x ``lon`` lies in tile ``name``; (lat, lon) bool."""
    ulx, uly, lrx, lry = tile_bounds_m(name)
    x, y = _sinusoidal(lat, lon)
    return (x >= ulx) & (x < lrx) & (y <= uly) & (y > lry)


def tiles_covering(lat: np.ndarray, lon: np.ndarray) -> list[str]:
    """The tiles holding at least one cell centre of ``lat`` x ``lon``, sorted by name."""
    x, y = _sinusoidal(lat, lon)
    h = np.floor(x / TILE_SIZE_M).astype(np.int64) + 18
    v = 9 - np.ceil(y / TILE_SIZE_M).astype(np.int64)
    codes = np.unique(h.ravel() * 100 + v.ravel())         # 1-D unique: fast on a province of 0.01 deg cells
    return sorted(f"h{c // 100:02d}v{c % 100:02d}" for c in codes.tolist() if 0 <= c // 100 <= 35 and 0 <= c % 100 <= 17)


def region_lattice(settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres (lat descending, lon ascending) of the region itself (no margin) on the lattice the
    HDF tiles are resampled to (``modis.grid_resolution_deg`` or the region's resolution) [degrees]."""
    r = settings.region
    res = float(settings.modis.grid_resolution_deg or r.resolution_deg)
    n_lon = max(int(math.floor((r.lon_max - r.lon_min) / res + 1e-9)), 1)
    n_lat = max(int(math.floor((r.lat_max - r.lat_min) / res + 1e-9)), 1)
    lon = r.lon_min + (np.arange(n_lon) + 0.5) * res
    lat = r.lat_max - (np.arange(n_lat) + 0.5) * res
    return lat, lon


def expected_tiles(settings: Settings) -> list[str]:
    """The tiles a day needs to cover the region (Qinghai: h24v05, h25v05, h26v05), from the region."""
    lat, lon = region_lattice(settings)
    return tiles_covering(lat, lon)
