"""The web map explorer's routes: the page, its static bundle, the map overlay, legend and outline.

The page (``/``) and its scripts are the built bundle of ``serving/explorer`` (Leaflet and uPlot
from the npm registry, copied by ``npm run build`` into ``serving/explorer/dist``; nothing is
fetched from a CDN at run time).  When the bundle was not built the API still starts and ``/``
says how to build it.

The map is drawn by the browser from a server-rendered PNG: the day's field on the grid's own
lon/lat (plate carrée) frame, one pixel per ``overlay_factor`` x ``overlay_factor`` cells, no
value transparent, on the quicklook's fixed colour scale.  Leaflet places it with the bounds of
``/legend``; no WebGL is needed.
"""

from __future__ import annotations

import io
import json
import math
import threading
from collections import OrderedDict
from datetime import date
from importlib import resources
from pathlib import Path

import numpy as np
from typing import Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse, Response

from etfuse.settings import Settings
from etfuse.tempfiles import write_atomic
from serving import quicklook as ql
from serving.render_lane import RenderLane

#: the built bundle (``make explorer``); absent in a checkout that was never built
EXPLORER_DIST = Path(__file__).resolve().parent / "explorer" / "dist"
#: longest side of the overlay PNG [pixels]: 1390 cells are block-averaged by 2 on the province grid
OVERLAY_MAX_PIXELS = 800
#: overlays kept in memory (a day is about 0.3 MB of PNG)
OVERLAY_CACHE_DAYS = 64

NOT_BUILT = """<!doctype html><meta charset="utf-8"><title>etfuse explorer not built</title>
<h1>The etfuse explorer is not built</h1>
<p>The API runs (see <a href="/docs">/docs</a>), but the web page's bundle is missing from
<code>{dist}</code>.</p>
<p>Build it once with <code>make explorer</code> (or <code>cd serving/explorer &amp;&amp; npm ci --no-audit --no-fund
&amp;&amp; npm run build</code>; needs node 18+ and the npm registry), then reload this page.</p>"""


def colour_stops(n: int = 11) -> list[str]:
    """``n`` colours of the fixed scale from ``VMIN_MM`` to ``VMAX_MM`` as ``#rrggbb``."""
    import matplotlib as mpl
    cmap = mpl.colormaps[ql.CMAP]
    return [mpl.colors.to_hex(cmap(k / (n - 1))) for k in range(n)]


def overlay_png(et_mm: np.ndarray, max_pixels: int = OVERLAY_MAX_PIXELS) -> bytes:
    """RGBA PNG of ``et_mm`` (rows north to south) on the fixed colour scale; no value transparent."""
    import matplotlib as mpl
    from PIL import Image
    factor = max(1, math.ceil(max(et_mm.shape) / max_pixels))
    shown = ql.block_mean(et_mm, factor)
    scaled = np.clip((shown - ql.VMIN_MM) / (ql.VMAX_MM - ql.VMIN_MM), 0.0, 1.0)
    lut = (mpl.colormaps[ql.CMAP](np.linspace(0.0, 1.0, 256)) * 255).astype(np.uint8)
    index = np.nan_to_num(scaled * 255, nan=0).astype(np.uint8)
    rgba = lut[index]
    rgba[~np.isfinite(shown), 3] = 0
    out = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(out, format="PNG", compress_level=1)
    return out.getvalue()


def outline_geojson(settings: Settings, grid) -> dict:
    """The region's outline: Qinghai's approximate polygon, or the grid's rectangle for other regions."""
    if settings.region.name == "qinghai":
        text = resources.files("etfuse").joinpath("data/qinghai_outline.geojson").read_text(encoding="utf-8")
        return json.loads(text)
    w, s, e, n = grid.bbox()
    return {"type": "FeatureCollection", "features": [{
        "type": "Feature",
        "properties": {"name": f"{settings.region.name} (grid extent)", "approximate": False},
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}}]}


class OverlayCache:
    """Overlay PNGs by (day, file SHA-256, layer): a replaced day gets a new picture, an old one ages out.

    Bounded by count (``size`` pictures of about 0.3 MB each); least recently used out first.
    """

    def __init__(self, size: int = OVERLAY_CACHE_DAYS) -> None:
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()

    def peek(self, key) -> bytes | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key, value: bytes) -> bytes:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


def overlay_path(product, record, layer: str = "et") -> Path:
    """Where the overlay of ``layer`` of the day version ``record`` is kept (named by the file's SHA-256)."""
    stem = f"etfuse_et_{record.day:%Y-%m-%d}" + ("" if layer == "et" else f"_{layer}")
    return Path(product.root) / "overlays" / f"{record.day:%Y}" / f"{stem}_{record.file_sha256[:16]}.png"


def stored_overlay(product, record, layer: str = "et") -> bytes:
    """The day's overlay of ``layer`` (``et``, ``et_q05``, ``et_q95``) from ``<product>/overlays``, drawn once.

    Kept on disk so every API worker and restart shares one drawing per day version (about 0.2 s
    on the province grid); a replaced day has a new SHA-256, older pictures of it are removed.
    """
    path = overlay_path(product, record, layer)
    folder, stem = path.parent, path.name.rsplit("_", 1)[0]
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    png = overlay_png(product.read_field(record.day, layer))
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, png)
    for old in folder.glob(f"{stem}_*.png"):
        if old != path:
            old.unlink(missing_ok=True)
    return png


def explorer_router(settings: Settings, grid, product, record_of, dist: Path | None = None, *,
                    lane: RenderLane | None = None) -> APIRouter:
    """Routes of the explorer page; ``record_of(day)`` answers 404 for a day without product.

    A picture not drawn yet is drawn on ``lane`` (serving/render_lane.py), never in the threads
    that answer point and area reads; a drawn one comes from memory or ``<product>/overlays``.
    """
    lane = lane or RenderLane(settings, product)
    dist = dist or settings.distribution.explorer_dist or EXPLORER_DIST
    router = APIRouter()
    cache = OverlayCache()
    outline = outline_geojson(settings, grid)

    @router.get("/", include_in_schema=False)
    def index() -> Response:
        page = dist / "index.html"
        if not page.is_file():
            return HTMLResponse(NOT_BUILT.format(dist=dist), status_code=503)
        return FileResponse(page, media_type="text/html")

    @router.get("/static/{name:path}", include_in_schema=False)
    def static(name: str) -> Response:
        root = dist.resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise HTTPException(404, f"no file {name!r} in the explorer bundle")
        return FileResponse(path)

    @router.get("/legend", summary="Colour scale and bounds of the map overlays")
    def legend() -> dict:
        w, s, e, n = grid.bbox()
        return {"vmin_mm": ql.VMIN_MM, "vmax_mm": ql.VMAX_MM, "units": "mm day-1", "colormap": ql.CMAP,
                "colours": colour_stops(), "no_value": "transparent", "extend": "max",
                "bounds": {"west": w, "south": s, "east": e, "north": n}, "crs": "EPSG:4326",
                "resolution_deg": grid.resolution_deg}

    @router.get("/outline.geojson", summary="The region's outline (Qinghai: approximate, for orientation)")
    def region_outline() -> dict:
        return outline

    @router.get("/overlay/{day}.png", summary="A day's ET as a map overlay (lon/lat frame, bounds in /legend)",
                response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def overlay(day: date, layer: Literal["et", "et_q05", "et_q95"] = Query(
            "et", description="et, or a bound of the 90 % interval (et_q05, et_q95; 404 for days without)")) -> Response:
        record = record_of(day)
        key = (record.day, record.file_sha256, layer)
        png = cache.peek(key)
        if png is None:
            try:                        # drawn before (by this or another worker): a file read, no lane
                png = overlay_path(product, record, layer).read_bytes()
            except FileNotFoundError:
                png = await lane.run(stored_overlay, record, layer)
            cache.put(key, png)
        return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=300"})

    return router
