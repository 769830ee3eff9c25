"""``modis``: MOD11A1 (collection 6.1) tiles from NASA Earthdata through ``earthaccess``.

The search asks CMR for the region's bounding box and the days; only granules of the region's
tiles (every sinusoidal tile the region touches: h24v05, h25v05, h26v05 for Qinghai, or
``fetch.modis.tiles``) are kept, and every tile of a day is downloaded.  A day whose tiles are not
all published yet is logged and fetched when they are.  Size and MD5 come from the granule's UMM
record when it has them.  Login: EARTHDATA_USERNAME / EARTHDATA_PASSWORD (environment or .env),
else the ``urs.earthdata.nasa.gov`` entry of ``~/.netrc``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from etfuse.fetch import Fetcher, FetchItem, Progress, register
from etfuse.fetch.credentials import env_value, export_dotenv, netrc_login
from etfuse.fetch.errors import CredentialsError, FetchError, ProviderDownError, TransferError
from etfuse.settings import Settings

log = logging.getLogger(__name__)

EARTHDATA_HOST = "urs.earthdata.nasa.gov"
#: MODIS sinusoidal sphere radius [m] and tile size [m]
SPHERE_RADIUS_M = 6371007.181
TILE_SIZE_M = 2 * math.pi * SPHERE_RADIUS_M / 36
_NAME = re.compile(r"MOD11A1\.A(?P<year>\d{4})(?P<doy>\d{3})\.h(?P<h>\d{2})v(?P<v>\d{2})\.\d{3}\.\d+\.hdf$")


def tile_of(lon: float, lat: float) -> tuple[int, int]:
    """The sinusoidal tile ``(h, v)`` holding a point [degrees]."""
    x = SPHERE_RADIUS_M * math.radians(lon) * math.cos(math.radians(lat))
    y = SPHERE_RADIUS_M * math.radians(lat)
    return int((x + 18 * TILE_SIZE_M) // TILE_SIZE_M), int((9 * TILE_SIZE_M - y) // TILE_SIZE_M)


def region_tiles(settings: Settings, step_deg: float = 0.05) -> list[str]:
    """Every tile the region (without margin) touches, as ``hHHvVV``."""
    if settings.fetch.modis.tiles:
        return sorted(settings.fetch.modis.tiles)
    r = settings.region
    n_lon = max(2, int(math.ceil((r.lon_max - r.lon_min) / step_deg)) + 1)
    n_lat = max(2, int(math.ceil((r.lat_max - r.lat_min) / step_deg)) + 1)
    tiles = set()
    for i in range(n_lat):
        lat = min(r.lat_min + i * step_deg, r.lat_max - 1e-9)
        for j in range(n_lon):
            lon = min(r.lon_min + j * step_deg, r.lon_max - 1e-9)
            tiles.add("h%02dv%02d" % tile_of(lon, lat))
    return sorted(tiles)


def granule_file(granule: Any) -> tuple[str, str, int | None, str | None]:
    """``(name, url, size_bytes, "md5:<hex>")`` of a granule from its data link and UMM record."""
    links = granule.data_links(access="external") if hasattr(granule, "data_links") else []
    hdf = [u for u in links if u.endswith(".hdf")] or links
    if not hdf:
        raise TransferError("modis", f"granule {granule!r} has no data link")
    url = hdf[0]
    name = url.rsplit("/", 1)[-1]
    size, checksum = None, None
    umm = granule.get("umm", {}) if hasattr(granule, "get") else {}
    for entry in (umm.get("DataGranule", {}) or {}).get("ArchiveAndDistributionInformation", []) or []:
        if entry.get("Name") == name:
            if entry.get("SizeInBytes"):
                size = int(entry["SizeInBytes"])
            algo = (entry.get("Checksum") or {}).get("Algorithm", "")
            if algo and entry["Checksum"].get("Value"):
                checksum = f"{algo.lower().replace('-', '')}:{entry['Checksum']['Value']}"
    return name, url, size, checksum


@register
class ModisFetcher(Fetcher):
    name = "modis"

    def _earthaccess(self):
        """earthaccess, logged in (or the stand-in given as ``client``)."""
        if getattr(self, "_logged_in", None) is not None:
            return self._logged_in
        client = self.client
        if client is None:
            export_dotenv(self.settings, ("EARTHDATA_USERNAME", "EARTHDATA_PASSWORD"))
            import earthaccess as client
        if env_value(self.settings, "EARTHDATA_USERNAME") and env_value(self.settings, "EARTHDATA_PASSWORD"):
            strategy = "environment"
        elif netrc_login(EARTHDATA_HOST) is not None:
            strategy = "netrc"
        else:
            raise CredentialsError(self.name, "no Earthdata login: set EARTHDATA_USERNAME and EARTHDATA_PASSWORD "
                                              f"(environment or .env) or add 'machine {EARTHDATA_HOST}' to ~/.netrc")
        try:
            auth = client.login(strategy=strategy)
        except Exception as exc:  # noqa: BLE001
            raise ProviderDownError(self.name, f"Earthdata login could not be done ({type(exc).__name__}: {exc})") from None
        if auth is None or not getattr(auth, "authenticated", False):
            raise CredentialsError(self.name, f"Earthdata refused the login from the {strategy} (wrong user name or "
                                              "password, or the account is not approved for LP DAAC data)")
        self._logged_in = client
        return client

    def plan(self, *, since: date | None, until: date | None, today: date, ledger) -> list[FetchItem]:
        cfg = self.config
        until = until or (today - timedelta(days=1))
        since = since or (until - timedelta(days=cfg.lookback_days - 1))
        client = self._earthaccess()
        r = self.settings.region
        try:
            granules = client.search_data(short_name=cfg.short_name, version=cfg.version,
                                          temporal=(since.isoformat(), until.isoformat()),
                                          bounding_box=(r.lon_min, r.lat_min, r.lon_max, r.lat_max))
        except FetchError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ProviderDownError(self.name, f"CMR search failed ({type(exc).__name__}: {exc})") from None
        tiles = set(region_tiles(self.settings))
        items, per_day = [], {}
        for granule in granules:
            name, url, size, checksum = granule_file(granule)
            match = _NAME.search(name)
            if match is None or f"h{match['h']}v{match['v']}" not in tiles:
                continue
            day = datetime.strptime(match["year"] + match["doy"], "%Y%j").date()
            if not since <= day <= until:
                continue
            per_day.setdefault(day, set()).add(f"h{match['h']}v{match['v']}")
            if ledger.has(self.name, url, name):
                continue
            items.append(FetchItem(source=self.name, target=self.target, name=name, origin=url, version=name,
                                   size=size, checksum=checksum, days=(day.isoformat(),), detail=granule))
        for day, found in sorted(per_day.items()):
            if found != tiles:
                log.warning("modis %s: tiles %s not published yet (have %s); fetched when they are", day,
                            sorted(tiles - found), sorted(found))
        return sorted(items, key=lambda i: (i.days, i.name))

    def download(self, item: FetchItem, partial: Path, *, offset: int, progress: Progress) -> None:
        client = self._earthaccess()
        staging = partial.parent / ".fetch-staging"
        staging.mkdir(exist_ok=True)
        try:
            paths = client.download([item.detail], local_path=str(staging), show_progress=False)
        except Exception as exc:  # noqa: BLE001
            raise TransferError(self.name, f"downloading {item.name} failed ({type(exc).__name__}: {exc})") from None
        got = [Path(p) for p in paths or [] if Path(p).name == item.name and Path(p).is_file()]
        if not got:
            raise TransferError(self.name, f"downloading {item.name}: earthaccess returned no file (see its log)")
        os.replace(got[0], partial)
        shutil.rmtree(staging, ignore_errors=True)
        progress(partial.stat().st_size, None)
