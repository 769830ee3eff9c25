"""``era5land``: ERA5-Land hourly from the Copernicus Climate Data Store through ``cdsapi``.

Requests use the CDS request form of ``reanalysis-era5-land``: ``variable`` (the reader's e, ssr,
str, skt by their CDS names), ``year``, ``month``, ``day``, ``time`` (every hour), ``data_format``,
``download_format`` ("unarchived") and ``area`` [N, W, S, E] = the region plus its margin, widened
to the 0.1 deg grid.  One request covers the wanted days of one calendar month (the reader and the
store join months: a month's last-day totals come with the next month's first step), split
further when it would exceed ``fetch.era5land.max_fields_per_request``.

ERA5T: days younger than ``final_delay_days`` are fetched as ERA5T (``provisional`` in the
ledger) and asked for again once older, when final ERA5-Land should exist; the new file replaces
them in the store (a revision).  Days are never asked for twice otherwise.  The CDS queue is
respected: one request at a time, the client waits for it to complete.  Credentials: the
client's own ``~/.cdsapirc`` or CDSAPI_URL / CDSAPI_KEY (environment or .env).
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from itertools import groupby
from pathlib import Path
from typing import Any

from etfuse.fetch import Fetcher, FetchItem, Progress, register
from etfuse.fetch.credentials import export_dotenv
from etfuse.fetch.errors import (CredentialsError, FetchError, ProviderDownError, QuotaError, RequestRefusedError,
                                 TransferError)
from etfuse.sources.common import region_bbox
from etfuse.settings import Settings

HOURS = tuple(f"{h:02d}:00" for h in range(24))
#: ERA5-Land's grid step [degrees]
GRID_DEG = 0.1
_MAGIC = (b"CDF", b"\x89HDF", b"GRIB", b"PK\x03\x04")


def request_area(settings: Settings) -> list[float]:
    """``[north, west, south, east]`` [degrees]: the region plus margin, widened to the 0.1 deg grid."""
    west, south, east, north = region_bbox(settings)
    out = lambda v, f: round(f(v / GRID_DEG - 1e-9 if f is math.ceil else v / GRID_DEG + 1e-9) * GRID_DEG, 1)  # noqa: E731
    return [out(north, math.ceil), out(west, math.floor), out(south, math.floor), out(east, math.ceil)]


def is_final(day: date, today: date, final_delay_days: int) -> bool:
    """Final ERA5-Land should exist for ``day`` (it is older than the ERA5T replacement delay)."""
    return (today - day).days > final_delay_days


def wanted_days(rows, *, since: date, until: date, today: date, final_delay_days: int) -> list[tuple[date, bool]]:
    """``(day, provisional)`` for each day of ``since..until`` to ask for: never fetched, or fetched
    as ERA5T and now old enough to be final."""
    final = {d for r in rows if not r.provisional for d in r.days}
    era5t = {d for r in rows if r.provisional for d in r.days}
    out = []
    day = since
    while day <= until:
        key, done_final = day.isoformat(), is_final(day, today, final_delay_days)
        if key not in final and (key not in era5t or done_final):
            out.append((day, not done_final))
        day += timedelta(days=1)
    return out


def build_requests(settings: Settings, days: list[tuple[date, bool]]) -> list[tuple[dict[str, Any], list[date], bool]]:
    """CDS requests for ``days``: one per month and stream, split to stay within the field limit."""
    cfg = settings.fetch.era5land
    per_day = len(cfg.variables) * len(HOURS)
    max_days = max(1, cfg.max_fields_per_request // per_day)
    area = request_area(settings)
    out = []
    for (year, month, provisional), group in groupby(days, key=lambda x: (x[0].year, x[0].month, x[1])):
        month_days = [d for d, _ in group]
        for k in range(0, len(month_days), max_days):
            chunk = month_days[k:k + max_days]
            request = {"variable": list(cfg.variables), "year": f"{year:04d}", "month": f"{month:02d}",
                       "day": [f"{d.day:02d}" for d in chunk], "time": list(HOURS),
                       "data_format": cfg.data_format, "download_format": "unarchived", "area": area}
            out.append((request, chunk, provisional))
    return out


def classify_cds(exc: BaseException, source: str, what: str) -> FetchError:
    """The fetch error of a cdsapi / ecmwf-datastores failure (they raise requests' HTTPError or
    plain exceptions whose text says what happened)."""
    if isinstance(exc, FetchError):
        return exc
    status = getattr(getattr(exc, "response", None), "status_code", None)
    text = " ".join(str(exc).split())[:400]
    low = text.lower()
    if status in (401, 403) or "api key" in low or "authentication" in low or "unauthorized" in low \
            or "missing/incomplete configuration" in low or ".cdsapirc" in low:
        return CredentialsError(source, f"{what}: the CDS refused the credentials or has none ({text}); set "
                                        "CDSAPI_URL and CDSAPI_KEY or write ~/.cdsapirc, and accept the "
                                        "ERA5-Land licence on the dataset page")
    if status == 429 or "quota" in low or "too many" in low or "rate limit" in low:
        return QuotaError(source, f"{what}: the CDS quota or queue limit is reached ({text})")
    if "licence" in low or "license" in low or "cost limits exceeded" in low or "too large" in low \
            or (isinstance(status, int) and 400 <= status < 500):
        return RequestRefusedError(source, f"{what}: the CDS refused the request ({text})")
    return ProviderDownError(source, f"{what}: the CDS cannot be reached or failed ({type(exc).__name__}: {text})")


@register
class Era5LandFetcher(Fetcher):
    name = "era5land"

    def plan(self, *, since: date | None, until: date | None, today: date, ledger) -> list[FetchItem]:
        cfg = self.config
        until = until or (today - timedelta(days=cfg.latency_days))
        since = since or (until - timedelta(days=cfg.lookback_days - 1))
        days = wanted_days(ledger.rows(self.name), since=since, until=until, today=today,
                           final_delay_days=cfg.final_delay_days)
        ext = "nc" if cfg.data_format == "netcdf" else "grib"
        items = []
        for request, chunk, provisional in build_requests(self.settings, days):
            stream = "era5t" if provisional else "final"
            first, last = chunk[0], chunk[-1]
            items.append(FetchItem(
                source=self.name, target=self.target, origin=f"cds:{cfg.dataset}:{first}..{last}", version=stream,
                name=f"era5land_{first:%Y%m%d}-{last:%Y%m%d}_{stream}.{ext}", provisional=provisional,
                days=tuple(d.isoformat() for d in chunk), detail=request))
        return items

    def _client(self):
        if self.client is None:
            export_dotenv(self.settings, ("CDSAPI_URL", "CDSAPI_KEY"))
            try:
                import cdsapi
                self.client = cdsapi.Client(quiet=True, progress=False, timeout=int(self.config.timeout_s),
                                            retry_max=self.config.retries + 1)
            except Exception as exc:  # noqa: BLE001 - no configuration is the usual reason
                raise classify_cds(exc, self.name, "creating the CDS client") from None
        return self.client

    def download(self, item: FetchItem, partial: Path, *, offset: int, progress: Progress) -> None:
        client = self._client()
        what = f"request {item.origin} ({len(item.days)} day(s), {item.version})"
        try:
            client.retrieve(self.config.dataset, item.detail, str(partial))
        except Exception as exc:  # noqa: BLE001 - mapped to what the operator acts on
            raise classify_cds(exc, self.name, what) from None
        if not partial.is_file():
            raise TransferError(self.name, f"{what}: the client reported success but wrote no file")
        with open(partial, "rb") as handle:
            head = handle.read(8)
        if not head.startswith(_MAGIC):
            partial.unlink()
            raise TransferError(self.name, f"{what}: the download is not NetCDF, GRIB or ZIP (first bytes {head!r})")
        progress(partial.stat().st_size, None)
