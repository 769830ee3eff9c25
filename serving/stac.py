"""The static STAC catalogue of the product: one collection, one item per product day.

Layout under ``<product>/stac`` (served by the API at ``/stac``)::

    collection.json                 the collection: extent from the ledger, one ``item`` link per day
    items/etfuse_et_<YYYY-MM-DD>.json

Each item carries the day's provenance as properties (``etfuse:model_version``,
``etfuse:input_fingerprint``, ``etfuse:status``, ``etfuse:sources_used``,
``etfuse:file_sha256``) and two assets: the day's NetCDF (``/product/<date>.nc``) and its quicklook
(``/map/<date>.png``).  Asset hrefs are relative to the served catalogue (``../../product/...``),
or absolute under ``distribution.stac_base_url`` when that is set, so pystac-client, QGIS and
odc-stac reach the files through the API.

Written by :func:`update_day` after each product day write (item rewritten, collection rebuilt
from the ledger: a few ms per day), and whole by :func:`rebuild`.  Files are replaced atomically.
"""

from __future__ import annotations

import json
from datetime import timezone
from pathlib import Path

import pandas as pd
import pystac

from etfuse.clock import utcnow
from etfuse.settings import Settings
from etfuse.tempfiles import write_atomic
from serving.cf_product import PRODUCT_VERSION, etfuse_version

COLLECTION_ID = "etfuse-et-daily"
LICENSE = "CC-BY-4.0"


def stac_root(settings: Settings) -> Path:
    return Path(settings.folder("product")) / "stac"


def item_id(day: pd.Timestamp) -> str:
    return f"etfuse_et_{day:%Y-%m-%d}"


def _href(settings: Settings, relative_to_api: str, depth: int) -> str:
    """A link to an API path: absolute under stac_base_url's server, else relative from ``depth`` folders down."""
    base = settings.distribution.stac_base_url
    if base:
        server = base.rstrip("/").rsplit("/stac", 1)[0]
        return f"{server}/{relative_to_api}"
    return "../" * depth + relative_to_api


def _write_json(path: Path, document: dict) -> None:
    write_atomic(path, json.dumps(document, indent=1))


def _geometry(grid) -> tuple[list[float], dict]:
    w, s, e, n = grid.bbox()
    return [w, s, e, n], {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def make_item(settings: Settings, grid, record) -> pystac.Item:
    """The STAC item of one ledger record (serving.product.DayRecord)."""
    day = record.day
    bbox, geometry = _geometry(grid)
    start = day.to_pydatetime().replace(tzinfo=timezone.utc)
    end = (day + pd.Timedelta(days=1)).to_pydatetime().replace(tzinfo=timezone.utc)
    item = pystac.Item(
        id=item_id(day), geometry=geometry, bbox=bbox, datetime=start, start_datetime=start, end_datetime=end,
        properties={
            "title": f"etfuse daily ET {day:%Y-%m-%d} ({record.status})",
            "etfuse:model_version": record.model_version,
            "etfuse:input_fingerprint": record.fingerprint,
            "etfuse:status": record.status,
            "etfuse:sources_used": sorted(record.sources_used),
            "etfuse:file_sha256": record.file_sha256,
            "etfuse:product_version": PRODUCT_VERSION,
            "created": _iso(record.first_written_at or record.written_at),
            "updated": _iso(record.written_at),
        },
        collection=COLLECTION_ID)
    item.add_asset("data", pystac.Asset(
        href=_href(settings, f"product/{day:%Y-%m-%d}.nc", 2), media_type="application/x-netcdf",
        title="daily ET, CF-1.11 NetCDF-4 (variable et [mm day-1] with provenance)", roles=["data"]))
    item.add_asset("quicklook", pystac.Asset(
        href=_href(settings, f"map/{day:%Y-%m-%d}.png", 2), media_type=pystac.MediaType.PNG,
        title="quicklook map (0-6 mm day-1 scale)", roles=["overview", "visual"]))
    item.links = [pystac.Link("root", "../collection.json", media_type=pystac.MediaType.JSON),
                  pystac.Link("parent", "../collection.json", media_type=pystac.MediaType.JSON),
                  pystac.Link("collection", "../collection.json", media_type=pystac.MediaType.JSON)]
    return item


def _iso(moment) -> str:
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def make_collection(settings: Settings, grid, records) -> pystac.Collection:
    """The collection over every product day of ``records`` (the ledger, oldest first)."""
    bbox, _ = _geometry(grid)
    if records:
        first = records[0].day.to_pydatetime().replace(tzinfo=timezone.utc)
        last = (records[-1].day + pd.Timedelta(days=1)).to_pydatetime().replace(tzinfo=timezone.utc)
    else:
        first = last = utcnow()
    collection = pystac.Collection(
        id=COLLECTION_ID, title="etfuse daily actual evapotranspiration, Qinghai, 0.01 degree",
        description=("Daily actual evapotranspiration (00-24 UTC totals, mm) on a 0.01 degree grid, fused from GLEAM, "
                     "ERA5-Land and MODIS by a GCN-GRU trained against CMA stations. One item per day with its "
                     "model version, input fingerprint, status (provisional or final) and sources used."),
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[first, last]])),
        license=LICENSE, keywords=["evapotranspiration", "Qinghai", "GLEAM", "ERA5-Land", "MODIS"],
        providers=[pystac.Provider(name="etfuse", roles=[pystac.ProviderRole.PRODUCER,
                                                         pystac.ProviderRole.PROCESSOR])],
        summaries=pystac.Summaries({"etfuse:status": sorted({r.status for r in records}),
                                    "etfuse:model_version": sorted({r.model_version for r in records})}),
        extra_fields={"etfuse:software_version": etfuse_version()})
    collection.links = [pystac.Link("root", "./collection.json", media_type=pystac.MediaType.JSON)]
    collection.links += [pystac.Link("item", f"./items/{item_id(r.day)}.json", media_type=pystac.MediaType.GEOJSON)
                         for r in records]
    return collection


def _write_collection(settings: Settings, grid, records) -> Path:
    path = stac_root(settings) / "collection.json"
    _write_json(path, make_collection(settings, grid, records).to_dict(include_self_link=False, transform_hrefs=False))
    return path


def update_day(settings: Settings, store, day) -> Path | None:
    """Rewrite the item of ``day`` (or remove it when the day has no product) and the collection."""
    day = pd.Timestamp(day)
    record = store.record(day)
    path = stac_root(settings) / "items" / f"{item_id(day)}.json"
    if record is None:
        path.unlink(missing_ok=True)
    else:
        _write_json(path, make_item(settings, store.grid, record).to_dict(include_self_link=False,
                                                                          transform_hrefs=False))
    _write_collection(settings, store.grid, store.records())
    return path if record is not None else None


def rebuild(settings: Settings, store) -> int:
    """Write every item and the collection from the ledger; remove items of days no longer stored."""
    records = store.records()
    wanted = {f"{item_id(r.day)}.json" for r in records}
    folder = stac_root(settings) / "items"
    for r in records:
        _write_json(folder / f"{item_id(r.day)}.json",
                    make_item(settings, store.grid, r).to_dict(include_self_link=False, transform_hrefs=False))
    if folder.exists():
        for old in folder.glob("*.json"):
            if old.name not in wanted:
                old.unlink()
    _write_collection(settings, store.grid, records)
    return len(records)
