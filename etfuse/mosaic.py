"""A MODIS day assembled from its tiles, over any number of files and ingest runs.

LP DAAC delivers one MOD11A1 file per tile and day, and the files of one day arrive in any order,
often in different ingest runs.  The store (``HarmonisedStore.put_grid(..., combine=...)``) hands
each incoming day and the stored one to :class:`ModisMosaic`, which

* takes the incoming tile's values inside its own footprint and keeps the stored values
  everywhere else (tiles never overlap, etfuse/sources/modis_tiles.py, so any order of tiles and
  runs gives the same day);
* records in the day file which tiles it holds (``modis_tiles``), a content hash per tile
  (``modis_tile_sha256``), the expected tiles still missing (``modis_tiles_missing``) and the
  share of the region's cells inside held tiles (``modis_tile_coverage`` [1]), as attributes of
  ``lst``;
* tells the store what happened: a tile the day did not hold ``extended`` it (not a revision), a
  held tile with new content ``revised`` it (the old file is kept under revisions/), the same
  content again is ``unchanged``.

:func:`check_missing_tiles` raises one warning per day and missing set when expected tiles are
still absent ``modis.missing_tile_grace_hours`` after the day's first tile was stored.
GeoTIFF deliveries (reprojected mosaics) carry no tile names and replace the whole day, as before.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.alerts import Alert, AlertDispatcher
from etfuse.alerts.once import OnceLedger
from etfuse.clock import utcnow
from etfuse.settings import Settings
from etfuse.sources.modis_tiles import expected_tiles, footprint, region_lattice
from etfuse.store import HarmonisedStore, content_sha256

log = logging.getLogger(__name__)

TILES = "modis_tiles"
TILE_SHA = "modis_tile_sha256"
MISSING = "modis_tiles_missing"
COVERAGE = "modis_tile_coverage"


@dataclass
class MosaicResult:
    """What merging one incoming day into the stored one did, tile by tile."""

    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def action(self) -> str:
        return "revised" if self.replaced else "extended" if self.added else "unchanged"


def stored_tiles(lst: xr.DataArray) -> dict[str, str]:
    """Tile name -> content hash recorded on a stored day's ``lst`` ({} for a day stored before tiles
    were recorded, or from a GeoTIFF)."""
    text = lst.attrs.get(TILE_SHA)
    return dict(json.loads(text)) if text else {}


class ModisMosaic:
    """The store's ``combine`` hook for ``modis`` (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.expected = expected_tiles(settings)
        self._region_lat, self._region_lon = region_lattice(settings)
        self.last: MosaicResult | None = None
        self._prints: dict[tuple, np.ndarray] = {}

    def _footprint(self, name: str, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """footprint(), remembered per tile and grid (the same few tiles on the same grid, day after day)."""
        key = (name, lat.size, lon.size, float(lat[0]), float(lat[-1]), float(lon[0]), float(lon[-1]))
        if key not in self._prints:
            self._prints[key] = footprint(name, lat, lon)
        return self._prints[key]

    def coverage(self, tiles: list[str]) -> float:
        """Share of the region's cells whose centre lies in one of ``tiles`` [1]."""
        covered = np.zeros((self._region_lat.size, self._region_lon.size), dtype=bool)
        for name in tiles:
            covered |= self._footprint(name, self._region_lat, self._region_lon)
        return float(covered.mean())

    def __call__(self, stored: xr.Dataset | None, incoming: xr.Dataset) -> tuple[xr.Dataset, str | None]:
        """The day to store and the action (``new``/``extended``/``revised``/``unchanged``), or
        ``(incoming, None)`` when the incoming day names no tiles (the store's whole-day rules apply)."""
        if TILES not in incoming.coords or "lst" not in incoming:
            return incoming, None
        names = [n for n in str(incoming[TILES].values[0]).split() if n]
        lat, lon = incoming["lat"].values, incoming["lon"].values
        values = incoming["lst"].values[0].astype(np.float32)
        prints = {n: self._footprint(n, lat, lon) for n in names}
        shas = {n: content_sha256(values[fp]) for n, fp in prints.items()}
        result = MosaicResult()
        same_grid = (stored is not None and "lst" in stored and stored["lat"].size == lat.size
                     and stored["lon"].size == lon.size and np.allclose(stored["lat"].values, lat)
                     and np.allclose(stored["lon"].values, lon))
        if stored is not None and not same_grid:
            return incoming, None                       # a new grid replaces the day (store rules)
        if stored is None:
            merged, held = values.copy(), {}
            result.added = sorted(names)
        else:
            merged = stored["lst"].values[0].astype(np.float32).copy()
            held = stored_tiles(stored["lst"])
            legacy = not held and np.isfinite(merged).any()
            for n in sorted(names):
                if n in held:
                    (result.unchanged if held[n] == shas[n] else result.replaced).append(n)
                elif legacy and np.isfinite(merged[prints[n]]).any():
                    result.replaced.append(n)           # stored before tiles were recorded: content unknown
                else:
                    result.added.append(n)
            for n, fp in prints.items():
                merged[fp] = values[fp]
        tiles = {**held, **shas}
        names_all = sorted(tiles)
        missing = [t for t in self.expected if t not in tiles]
        day = incoming.isel(time=[0]).drop_vars([TILES])
        day["lst"] = (("time", "lat", "lon"), merged[None], incoming["lst"].attrs)
        day = day.assign_coords({TILES: ("time", [" ".join(names_all)]),
                                 TILE_SHA: ("time", [json.dumps(dict(sorted(tiles.items())))]),
                                 MISSING: ("time", [" ".join(missing)]),
                                 COVERAGE: ("time", [f"{self.coverage(names_all):.4f}"])})
        self.last = result
        return day, "new" if stored is None else result.action


@dataclass(frozen=True)
class IncompleteDay:
    day: pd.Timestamp
    tiles: list[str]
    missing: list[str]
    coverage: float
    first_stored: dt.datetime


def incomplete_days(store: HarmonisedStore, settings: Settings, now: dt.datetime) -> list[IncompleteDay]:
    """MODIS days first stored between ``missing_tile_lookback_days`` + grace and grace ago that still
    lack expected tiles (read from the day files' tile records)."""
    m = settings.modis
    grace = dt.timedelta(hours=m.missing_tile_grace_hours)
    since = now - grace - dt.timedelta(days=m.missing_tile_lookback_days)
    expected = expected_tiles(settings)
    out = []
    for day, first in sorted(store.first_stored("modis", since=since).items()):
        if first > now - grace:
            continue
        stored = store.read_grid_day("modis", day)
        if stored is None or "lst" not in stored:
            continue
        held = sorted(stored_tiles(stored["lst"]))
        if not held:                                    # a GeoTIFF day or one stored before tiles were recorded
            continue
        missing = [t for t in expected if t not in held]
        if missing:
            out.append(IncompleteDay(day, held, missing, float(stored["lst"].attrs.get(COVERAGE, "nan")), first))
    return out


def check_missing_tiles(store: HarmonisedStore, settings: Settings, dispatcher: AlertDispatcher,
                        now: dt.datetime | None = None) -> list[Alert]:
    """One ``modis_tiles_missing`` warning per day and missing set, past the grace period."""
    now = now or utcnow()
    once = OnceLedger.for_settings(settings)
    sent = []
    for inc in incomplete_days(store, settings, now):
        key = f"modis_tiles_missing:{inc.day:%Y-%m-%d}:{' '.join(inc.missing)}"
        if not once.due(key, now, None):
            continue
        alert = Alert(severity="warning", source="modis", kind="modis_tiles_missing", days=[f"{inc.day:%Y-%m-%d}"],
                      summary=(f"MODIS {inc.day:%Y-%m-%d} still lacks tile(s) {' '.join(inc.missing)} "
                               f"{settings.modis.missing_tile_grace_hours:g} h after its first tile; the day covers "
                               f"{inc.coverage:.0%} of the region (holds {' '.join(inc.tiles)})"),
                      checks=["modis_tiles_complete"],
                      details={"missing": inc.missing, "held": inc.tiles, "coverage": inc.coverage,
                               "first_stored": inc.first_stored.isoformat()})
        dispatcher.send(alert)
        sent.append(alert)
    return sent
