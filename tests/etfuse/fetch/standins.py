"""Stand-ins for the provider client libraries, injected at their boundary: they record what the
plug-ins ask and answer with files in the providers' real formats (our synthetic writers)."""

from __future__ import annotations

import hashlib
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.synth.writers_grids import write_era5land_cds_netcdf
from etfuse.synth.writers_modis import TILE_PIXELS, mod11a1_name, write_mod11a1_hdf

SHORT = {"total_evaporation": "e", "surface_net_solar_radiation": "ssr", "surface_net_thermal_radiation": "str",
         "skin_temperature": "skt"}


class CdsClient:
    """``cdsapi.Client`` as the plug-in uses it: ``retrieve(name, request, target)``."""

    def __init__(self, *, today: date, final_delay_days: int = 90, fail: BaseException | None = None) -> None:
        self.requests: list[tuple[str, dict]] = []
        self.today, self.final_delay_days, self.fail = today, final_delay_days, fail

    def retrieve(self, name: str, request: dict, target: str | None = None) -> None:
        self.requests.append((name, request))
        if self.fail is not None:
            raise self.fail
        north, west, south, east = request["area"]
        lat = np.round(np.arange(north, south - 0.05, -0.1), 1)
        lon = np.round(np.arange(west, east + 0.05, 0.1), 1)
        times = pd.DatetimeIndex([f"{request['year']}-{request['month']}-{d} {t}" for d in request["day"]
                                  for t in request["time"]])
        expver = ["0001" if (self.today - t.date()).days > self.final_delay_days else "0005" for t in times]
        hours = (times.hour.to_numpy() + 1)[:, None, None] * np.ones((1, lat.size, lon.size))
        data = {"e": -1e-4 * hours, "ssr": 5e5 * hours, "str": -2e5 * hours,
                "skt": 270.0 + hours}
        ds = xr.Dataset({SHORT[v]: (("valid_time", "latitude", "longitude"), data[SHORT[v]])
                         for v in request["variable"]},
                        coords={"valid_time": times, "latitude": lat, "longitude": lon,
                                "expver": ("valid_time", np.array(expver, dtype=object))})
        write_era5land_cds_netcdf(Path(target), ds)


class Auth:
    def __init__(self, authenticated: bool) -> None:
        self.authenticated = authenticated


class Granule(dict):
    """What earthaccess's DataGranule offers the plug-in: ``data_links()`` and the UMM record."""

    def __init__(self, url: str, umm: dict) -> None:
        super().__init__(umm=umm, meta={"native-id": url.rsplit("/", 1)[-1]})
        self.url = url

    def data_links(self, access: str = "external") -> list[str]:
        return [self.url]


class Earthaccess:
    """The ``earthaccess`` module as the plug-in uses it: login, search_data, download.  The
    "server" holds real HDF4 MOD11A1 tiles written at search time, with their size and MD5."""

    def __init__(self, server: Path, *, tiles: tuple[str, ...] = ("h24v05", "h25v05", "h26v05", "h27v05"),
                 authenticated: bool = True, corrupt: set[str] | None = None) -> None:
        self.server = server
        self.tiles, self.authenticated = tiles, authenticated
        self.corrupt = corrupt or set()
        self.logins: list[str] = []
        self.searches: list[dict[str, Any]] = []
        self.downloads: list[str] = []

    def login(self, strategy: str = "all", persist: bool = False) -> Auth:
        self.logins.append(strategy)
        return Auth(self.authenticated)

    def search_data(self, count: int = -1, **kwargs: Any) -> list[Granule]:
        self.searches.append(kwargs)
        first, last = (date.fromisoformat(d) for d in kwargs["temporal"])
        out = []
        day = first
        while day <= last:
            for tile in self.tiles:
                h, v = int(tile[1:3]), int(tile[4:6])
                name = mod11a1_name(day, h, v)
                path = self.server / name
                if not path.exists():
                    self.server.mkdir(parents=True, exist_ok=True)
                    lst = np.full((TILE_PIXELS, TILE_PIXELS), 290.0 + h - v)
                    write_mod11a1_hdf(path, day=day, h=h, v=v, lst_k=lst)
                data = path.read_bytes()
                umm = {"GranuleUR": name, "DataGranule": {"ArchiveAndDistributionInformation": [
                    {"Name": name, "SizeInBytes": len(data),
                     "Checksum": {"Value": hashlib.md5(data).hexdigest(), "Algorithm": "MD5"}}]}}
                out.append(Granule(f"https://data.lpdaac.earthdatacloud.nasa.gov/lp-prod-protected/MOD11A1.061/"
                                   f"{name[:-4]}/{name}", umm))
            day += timedelta(days=1)
        return out

    def download(self, granules, local_path=None, provider=None, threads=8, *, show_progress=None, **kw) -> list[str]:
        out = []
        for granule in granules:
            name = granule.url.rsplit("/", 1)[-1]
            self.downloads.append(name)
            target = Path(local_path) / name
            shutil.copyfile(self.server / name, target)
            if name in self.corrupt:
                with open(target, "r+b") as handle:
                    handle.seek(2000)
                    handle.write(b"\x00garbage\x00")
            out.append(str(target))
        return out


def day_range(first: str, last: str) -> list[str]:
    d0, d1 = datetime.fromisoformat(first).date(), datetime.fromisoformat(last).date()
    return [(d0 + timedelta(days=k)).isoformat() for k in range((d1 - d0).days + 1)]
