"""The HTTP API over the daily product (FastAPI; OpenAPI docs at /docs).

Read-only: point time series (JSON or CSV), area statistics, NetCDF subsets (days x box), a day's
quicklook map, the web explorer (``/``, serving/explorer_api.py), the STAC catalogue (``/stac``),
Prometheus metrics (``/metrics``, serving/metrics.py), the serving model, health and readiness.
Non-public routes need the token (serving/access.py); each client is rate-limited.  Every input is validated before any file is touched (coordinates inside the
region, dates that exist, bounded ranges and areas) and refused with a clear 4xx message.
Requests are bounded before routing: a URL (path and query) longer than ``MAX_URL_BYTES`` is
refused with 414, a declared body larger than ``MAX_BODY_BYTES`` with 413 (no route takes a body),
and every method but GET/HEAD is refused (405): there is no mutating route.
"""

from __future__ import annotations

import io
import logging
import math
from contextlib import asynccontextmanager
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from etfuse import __version__
from etfuse.freshness import product_staleness
from etfuse.grid import TargetGrid
from etfuse.interval import BOUND_NAMES
from etfuse.settings import Settings
from serving.reports import reports_router

log = logging.getLogger(__name__)

#: longest accepted request target (path and query string) [bytes]
MAX_URL_BYTES = 4096
#: largest accepted request body [bytes]; no route reads one
MAX_BODY_BYTES = 1024


class RequestLimits:
    """Pure ASGI middleware: refuse oversized URLs (414) and bodies (413) before any route runs."""

    def __init__(self, app, max_url_bytes: int = MAX_URL_BYTES, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_url_bytes, self.max_body_bytes = app, max_url_bytes, max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string") or b"")
            if target > self.max_url_bytes:
                response = JSONResponse(status_code=414, content={
                    "detail": f"request URL of {target} bytes; at most {self.max_url_bytes}"})
                await response(scope, receive, send)
                return
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and (not length.strip().isdigit() or int(length) > self.max_body_bytes):
                response = JSONResponse(status_code=413, content={
                    "detail": f"request body of {length.decode(errors='replace')[:20]} bytes; "
                              f"at most {self.max_body_bytes} (this API is read-only)"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class TimeseriesPoint(BaseModel):
    date: date
    et_mm: float | None = Field(description="daily actual evapotranspiration [mm] (= kg m-2); null where no product")
    status: str | None = Field(description="provisional or final")
    model_version: int | None
    et_q05_mm: float | None = Field(None, description="lower bound of the cell's 90 % interval [mm]; null for days "
                                                      "whose model gave no interval")
    et_q95_mm: float | None = Field(None, description="upper bound of the cell's 90 % interval [mm]; null likewise")


class Timeseries(BaseModel):
    lat: float
    lon: float
    cell_lat: float = Field(description="centre of the product cell holding the point [degrees north]")
    cell_lon: float = Field(description="centre of the product cell holding the point [degrees east]")
    units: str = "mm day-1"
    values: list[TimeseriesPoint]


class AreaStats(BaseModel):
    date: date
    bbox: tuple[float, float, float, float] = Field(description="west, south, east, north [degrees]")
    cells: int
    valid_cells: int
    mean_mm: float | None
    min_mm: float | None
    max_mm: float | None
    std_mm: float | None
    total_m3: float | None = Field(description="volume evaporated over the cells [m3] (cell areas on the sphere)")
    status: str | None
    model_version: int | None
    et_q05_mean_mm: float | None = Field(None, description=(
        "box mean of the cells' 5 % bounds [mm]; with et_q95_mean_mm the 90 % interval of the box mean if the "
        "cells' errors were fully correlated, a conservative (too wide) one otherwise; null for days without intervals"))
    et_q95_mean_mm: float | None = Field(None, description="box mean of the cells' 95 % bounds [mm]; see et_q05_mean_mm")


class ModelInfo(BaseModel):
    version: int | None
    alias: str = "champion"
    providers: list[str] = []
    metrics: dict[str, float] = {}
    status: str


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def create_app(settings: Settings, *, product=None, registry=None, predictor=None) -> FastAPI:
    """The API over ``settings``' product; collaborators can be injected (tests)."""
    from serving.access import RateLimit, check_token
    from serving.downloads import subset_bytes, subset_size
    from serving.explorer_api import explorer_router
    from serving.metrics import RequestMetrics, make_registry
    from serving.product import DayNotFoundError, ProductError, ProductStore
    from serving.render_lane import RenderLane
    from serving.stac import stac_root

    grid = TargetGrid.from_region(settings.region)
    product = product or ProductStore(settings, grid)
    limits = settings.serving
    dist = settings.distribution
    lane = RenderLane(settings, product)        # subsets and overlay drawings: never in the threads of point/area reads

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        lane.close()

    app = FastAPI(lifespan=lifespan, title="etfuse ET product API", version=__version__,
                  description="Daily actual evapotranspiration over Qinghai (0.01 deg), fused from GLEAM, "
                              "ERA5-Land and MODIS by a GCN-GRU. Read-only.")
    metrics_registry = make_registry(settings, product, registry)
    app.add_middleware(RateLimit, per_minute=dist.rate_limit_per_minute)
    app.add_middleware(RequestLimits)
    app.add_middleware(RequestMetrics, registry=metrics_registry)     # outermost: counts refused requests too
    app.include_router(reports_router(settings))              # report links in alerts open here

    @app.exception_handler(ProductError)
    async def _product_error(request: Request, exc: ProductError):      # found while reading: a 4xx, not a 500
        return JSONResponse(status_code=404 if isinstance(exc, DayNotFoundError) else 422,
                            content={"detail": str(exc)})

    def check_point(lat: float, lon: float) -> None:
        w, s, e, n = grid.bbox()
        if not (s <= lat <= n and w <= lon <= e):
            raise HTTPException(422, f"point ({lat}, {lon}) is outside the product region "
                                     f"lat {s}..{n}, lon {w}..{e}")

    def check_range(start: date, end: date) -> None:
        if end < start:
            raise HTTPException(422, f"end {end} is before start {start}")
        days = (end - start).days + 1
        if days > limits.max_range_days:
            raise HTTPException(422, f"{days} days asked; at most {limits.max_range_days} per request")

    def record_of(day: date):
        record = product.record(pd.Timestamp(day))
        if record is None:
            raise HTTPException(404, f"no product for {day}; days available: {_available(product)}")
        return record

    @app.get("/health", summary="The process is up")
    def health() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get("/ready", summary="Product and model are usable")
    def ready() -> JSONResponse:
        problems = []
        if not product.days():
            problems.append("no product day written yet")
        if registry is not None:
            try:
                registry.onnx_model_path("champion")
            except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
                problems.append(f"model registry: {exc}")
        status = 200 if not problems else 503
        # a stale product still serves its days: reported (and alerted on), not a 503
        freshness = product_staleness(product.days(), settings)
        return JSONResponse(status_code=status, content={"ready": not problems, "problems": problems,
                                                         "product": freshness, "stale": freshness["stale"]})

    @app.get("/model", response_model=ModelInfo, summary="The model that serves new days")
    def model() -> ModelInfo:
        if registry is None:
            return ModelInfo(version=None, status="no registry configured")
        try:
            info = registry.champion()
        except Exception as exc:  # noqa: BLE001
            raise HTTPException(503, f"model registry unreachable: {exc}")
        if info is None:
            return ModelInfo(version=None, status="no champion yet")
        providers = predictor.model().providers if predictor is not None else []
        metrics = {k: float(v) for k, v in info.metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        return ModelInfo(version=info.version, providers=providers, metrics=metrics, status=info.status)

    @app.get("/days", summary="Product days with their status and model version")
    def days(start: date | None = None, end: date | None = None) -> list[dict]:
        return [{"date": f"{r.day:%Y-%m-%d}", "status": r.status, "model_version": r.model_version,
                 "sources_used": sorted(r.sources_used)} for r in product.records(start, end)]

    @app.get("/timeseries", summary="Daily ET at a point", response_model=Timeseries,
             responses={200: {"content": {"text/csv": {}}}})
    def timeseries(lat: float = Query(..., ge=-90, le=90, description="[degrees north]"),
                   lon: float = Query(..., ge=-180, le=360, description="[degrees east]"),
                   start: date = Query(...), end: date = Query(...),
                   format: Literal["json", "csv"] = "json"):
        check_point(lat, lon)
        check_range(start, end)
        frame = product.read_point(lat, lon, pd.Timestamp(start), pd.Timestamp(end))
        row, col = grid.cell_of(lat, lon)
        cell_lat, cell_lon = float(grid.lat[int(row)]), float(grid.lon[int(col)])
        if format == "csv":
            text = io.StringIO()
            out = frame.assign(lat=cell_lat, lon=cell_lon)
            out.to_csv(text, index=False, float_format="%.3f", date_format="%Y-%m-%d")
            return PlainTextResponse(text.getvalue(), media_type="text/csv")
        values = [TimeseriesPoint(date=pd.Timestamp(r.date).date(), et_mm=_finite(r.et_mm), status=r.status,
                                  model_version=None if pd.isna(r.model_version) else int(r.model_version),
                                  et_q05_mm=_finite(r.et_q05_mm), et_q95_mm=_finite(r.et_q95_mm))
                  for r in frame.itertuples()]
        return Timeseries(lat=lat, lon=lon, cell_lat=cell_lat, cell_lon=cell_lon, values=values)

    @app.get("/area", summary="Statistics of a day's ET over a box", response_model=AreaStats)
    def area(west: float = Query(..., description="[degrees east]"), south: float = Query(...),
             east: float = Query(...), north: float = Query(...), day: date = Query(..., alias="date")):
        if not (west < east and south < north):
            raise HTTPException(422, f"expected west < east and south < north, got {west},{south},{east},{north}")
        w, s, e, n = grid.bbox()
        if east <= w or west >= e or north <= s or south >= n:
            raise HTTPException(422, f"the box does not overlap the product region lat {s}..{n}, lon {w}..{e}")
        cells = (min(n, north) - max(s, south)) * (min(e, east) - max(w, west)) / grid.resolution_deg ** 2
        if cells > limits.max_area_cells:
            raise HTTPException(422, f"the box covers about {int(cells)} cells; at most {limits.max_area_cells}")
        record = record_of(day)
        box = (west, south, east, north)
        values = product.read_area(box, pd.Timestamp(day))
        lats = grid.lat[product.area_window(box)[0]][:, None]
        finite = np.isfinite(values)
        volume = None
        if finite.any():
            # cell area [m2] on a sphere of radius 6371 km times ET [mm] / 1000
            dlat = np.deg2rad(grid.resolution_deg)
            area_m2 = (6_371_000.0 ** 2) * dlat * dlat * np.cos(np.deg2rad(lats))
            volume = float(np.nansum(values * area_m2 / 1000.0))
        band = {}
        if product.has_interval(record):
            for name in BOUND_NAMES:
                bound = product.read_area(box, pd.Timestamp(day), name)
                band[f"{name}_mean_mm"] = _finite(np.nanmean(bound)) if np.isfinite(bound).any() else None
        return AreaStats(**band, date=day, bbox=(west, south, east, north), cells=int(values.size), valid_cells=int(finite.sum()),
                         mean_mm=_finite(np.nanmean(values)) if finite.any() else None,
                         min_mm=_finite(np.nanmin(values)) if finite.any() else None,
                         max_mm=_finite(np.nanmax(values)) if finite.any() else None,
                         std_mm=_finite(np.nanstd(values)) if finite.any() else None,
                         total_m3=volume, status=record.status, model_version=record.model_version)

    @app.get("/map/{day}.png", summary="A day's quicklook map", response_class=FileResponse,
             responses={200: {"content": {"image/png": {}}}})
    def day_map(day: date) -> Response:
        record_of(day)
        return FileResponse(product.quicklook(pd.Timestamp(day)), media_type="image/png")

    @app.get("/subset.nc", summary="NetCDF subset of the product (days x box), CF attributes as the product files",
             response_class=Response, responses={200: {"content": {"application/x-netcdf": {}}}})
    async def subset(request: Request, west: float = Query(..., description="[degrees east]"), south: float = Query(...),
               east: float = Query(...), north: float = Query(...), start: date = Query(...),
               end: date = Query(...)) -> Response:
        if not (west < east and south < north):
            raise HTTPException(422, f"expected west < east and south < north, got {west},{south},{east},{north}")
        check_range(start, end)
        box = (west, south, east, north)
        cells, n_days = subset_size(product, box, start, end)
        size = cells * n_days
        if size > dist.max_subset_cells:
            raise HTTPException(422, f"the subset holds {cells} cells x {n_days} days = {size}; at most "
                                     f"{dist.max_subset_cells} per request")
        if size > dist.public_subset_cells:
            check_token(settings, request, f"a subset of {size} cells x days (more than "
                                           f"{dist.public_subset_cells} without the token)")
        # the render lane: downloads wait there (holding no thread) instead of starving point and area reads
        body = await lane.run(subset_bytes, box, start, end, settings.folder("cache") / "subsets")
        name = f"etfuse_et_{start:%Y%m%d}_{end:%Y%m%d}_{west:g}_{south:g}_{east:g}_{north:g}.nc"
        return Response(body, media_type="application/x-netcdf",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/product/{day}.nc", summary="A day's product file (NetCDF-4, CF-1.11)", response_class=FileResponse,
             responses={200: {"content": {"application/x-netcdf": {}}}})
    def day_file(day: date) -> Response:
        record = record_of(day)
        if not record.path.exists():
            raise HTTPException(404, f"the product file of {day} is being replaced; retry")
        return FileResponse(record.path, media_type="application/x-netcdf", filename=record.path.name)

    @app.get("/metrics", summary="Prometheus metrics (needs the token unless distribution.metrics_public)",
             response_class=PlainTextResponse)
    def metrics(request: Request) -> Response:
        if not dist.metrics_public:
            check_token(settings, request, "/metrics")
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/stac/{name:path}", summary="The static STAC catalogue (collection.json, items/<date>.json)")
    def stac(name: str) -> Response:
        root = stac_root(settings).resolve()
        path = (root / (name or "collection.json")).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise HTTPException(404, f"no STAC document {name!r} (the catalogue starts at /stac/collection.json)")
        media = "application/json" if path.suffix == ".json" else None
        return FileResponse(path, media_type=media)

    app.include_router(explorer_router(settings, grid, product, record_of, lane=lane))
    return app


def _available(product) -> str:
    days = product.days()
    if not days:
        return "none"
    return f"{days[0]:%Y-%m-%d}..{days[-1]:%Y-%m-%d} ({len(days)} days)"


def app_from_environment() -> FastAPI:
    """The API over ``load_settings()`` (ETFUSE_CONFIG, ETFUSE_* variables), with the model registry
    when one is reachable: the factory for ``uvicorn --factory serving.api:app_from_environment``,
    which several worker processes need (each builds its own app)."""
    from etfuse.settings import load_settings
    settings = load_settings()
    registry = predictor = None
    if settings.distribution.serve_with_registry:
        from serving.wiring import ServingParts
        parts = ServingParts(settings)
        registry, predictor = parts.registry, parts.predictor
    return create_app(settings, registry=registry, predictor=predictor)
