"""The render lane (serving/render_lane.py): point and area reads never wait for subsets or map
drawings, a full lane answers 503 instead of queueing without bound, renders run in a lower-priority
process of their own, and a cached map is redrawn when its day is rewritten."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pandas as pd
import pytest

from etfuse.settings import load_settings
from serving.product import ProductStore
from serving.render_lane import RenderLane
from tests.services import free_port, wait_http
from tests.standins import FakeRegistry

DAYS = pd.date_range("2021-07-01", "2021-07-03")
#: how long the stand-in subset writer takes [s]: far longer than any point read
SLOW_RENDER_S = 1.5


def make_settings(tmp_path, **distribution):
    return load_settings(home=tmp_path / "home", region="test", serving={"quicklooks": False},
                         distribution={"rate_limit_per_minute": 0, "stac": False, **distribution})


def write(store: ProductStore, day, value: float, tag: str) -> None:
    store.write_day(day, np.full(store.grid.shape, value, np.float32), model_version=2, status="final",
                    sources_used={"era5land"}, fingerprint=hashlib.sha256(tag.encode()).hexdigest())


@pytest.fixture
def store(tmp_path):
    store = ProductStore(make_settings(tmp_path))
    for k, day in enumerate(DAYS):
        write(store, day, 1.0 + k, f"d{k}")
    return store


class Server:
    """The API in uvicorn on loopback, in a thread of the test process."""

    def __init__(self, app) -> None:
        import uvicorn
        self.port = free_port()
        self.uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.uv.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        url = f"http://127.0.0.1:{self.port}"
        wait_http(url + "/health", timeout=30)
        return url

    def __exit__(self, *exc) -> None:
        self.uv.should_exit = True
        self.thread.join(timeout=15)


def slow_subset(product, bbox, start, end, folder) -> bytes:
    """Stand-in for the subset writer: slow, and it holds no thread of the API's pool while it waits."""
    time.sleep(SLOW_RENDER_S)
    return b"CDF-stand-in"


def test_point_and_area_answer_while_more_renders_wait_than_the_api_has_threads(tmp_path, store, monkeypatch):
    """60 subsets in flight (more than anyio's 40 worker threads) on a lane of width 8 take 8 x 1.5 s;
    point and area requests meanwhile answer at once, and every subset still succeeds.  Before the
    lane, each waiting download held a thread and a point read waited about 3.5 s here."""
    import serving.downloads
    from serving.api import create_app
    monkeypatch.setattr(serving.downloads, "subset_bytes", slow_subset)
    settings = make_settings(tmp_path, render_lane="thread", max_concurrent_downloads=8)
    n_renders = 60

    async def scenario(url: str):
        limits = httpx.Limits(max_connections=n_renders + 10)
        async with httpx.AsyncClient(base_url=url, timeout=n_renders * SLOW_RENDER_S + 30, limits=limits) as http:
            subsets = [asyncio.create_task(http.get("/subset.nc", params={
                "west": 101, "south": 36, "east": 101.5, "north": 36.5, "start": "2021-07-01", "end": "2021-07-03"}))
                for _ in range(n_renders)]
            await asyncio.sleep(1.0)                       # all of them are in the server now
            cheap = []
            for k in range(5):
                t0 = time.perf_counter()
                r = await http.get("/timeseries", params={"lat": 36.7, "lon": 101.7, "start": "2021-07-01",
                                                          "end": "2021-07-03"})
                a = await http.get("/area", params={"west": 101, "south": 36, "east": 102, "north": 37,
                                                    "date": "2021-07-02"})
                cheap.append((time.perf_counter() - t0, r, a))
            done_early = sum(t.done() for t in subsets)
            return cheap, done_early, await asyncio.gather(*subsets)

    with Server(create_app(settings, product=store, registry=FakeRegistry())) as url:
        cheap, done_early, subsets = asyncio.run(scenario(url))
    assert done_early <= 16, "the renders must still be waiting while the cheap requests run"
    for seconds, r, a in cheap:
        assert r.status_code == 200 and a.status_code == 200
        assert seconds < 0.5, f"a point and an area read took {seconds:.2f} s behind waiting renders"
    assert [s.status_code for s in subsets] == [200] * n_renders          # waiting renders do not fail
    assert {s.content for s in subsets} == {b"CDF-stand-in"}


def test_a_full_lane_answers_503_with_retry_after(tmp_path, store, monkeypatch):
    import serving.downloads
    from serving.api import create_app
    monkeypatch.setattr(serving.downloads, "subset_bytes", slow_subset)
    settings = make_settings(tmp_path, render_lane="thread", max_concurrent_downloads=1, render_queue=2)

    def get(url):
        return httpx.get(url + "/subset.nc", timeout=30, params={
            "west": 101, "south": 36, "east": 101.5, "north": 36.5, "start": "2021-07-01", "end": "2021-07-01"})

    with Server(create_app(settings, product=store, registry=FakeRegistry())) as url:
        with ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(get, [url] * 5))
    codes = sorted(r.status_code for r in answers)
    assert codes.count(200) >= 2 and codes.count(503) >= 1 and set(codes) <= {200, 503}, codes
    refused = next(r for r in answers if r.status_code == 503)
    assert refused.headers["retry-after"] == "5" and "waiting" in refused.json()["detail"]


def worker_facts(product, seconds: float) -> tuple[int, int, str]:
    """(pid, niceness, product root) as a lane worker sees them, after burning ``seconds`` of CPU."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return os.getpid(), os.nice(0), str(product.root)


def test_process_lane_runs_renders_in_a_lower_priority_process_with_its_own_store(tmp_path, store):
    settings = make_settings(tmp_path, render_lane="process", max_concurrent_downloads=1, render_nice=7)
    lane = RenderLane(settings, store)
    base_nice = os.nice(0)

    async def scenario():
        cpu0, t0 = time.process_time(), time.perf_counter()
        facts = await asyncio.gather(*(lane.run(worker_facts, 0.3) for _ in range(3)))
        return facts, time.process_time() - cpu0, time.perf_counter() - t0

    try:
        facts, own_cpu, wall = asyncio.run(scenario())
    finally:
        lane.close()
    pids = {pid for pid, _, _ in facts}
    assert os.getpid() not in pids and len(pids) == 1                    # one worker process, not this one
    assert {nice for _, nice, _ in facts} == {min(19, base_nice + 7)}
    assert {root for _, _, root in facts} == {str(store.root)}
    assert wall >= 0.85                                                  # width 1: the three ran one after another
    assert own_cpu < 0.5, f"the API process spent {own_cpu:.2f} s of CPU on 0.9 s of rendering"


def die(product) -> None:
    os._exit(3)                                         # a lane worker killed in the middle of a render


def test_a_dead_lane_process_is_a_503_and_is_replaced(tmp_path, store):
    from fastapi import HTTPException
    lane = RenderLane(make_settings(tmp_path, render_lane="process", render_nice=0), store)

    async def scenario():
        with pytest.raises(HTTPException) as dead:
            await lane.run(die)
        return dead.value, await lane.run(worker_facts, 0.0)

    try:
        dead, facts = asyncio.run(scenario())
    finally:
        lane.close()
    assert dead.status_code == 503 and dead.headers["Retry-After"] == "1"
    assert facts[2] == str(store.root) and lane.waiting == 0


def test_cached_overlay_is_redrawn_when_its_day_is_rewritten(tmp_path, store):
    from fastapi.testclient import TestClient
    from PIL import Image

    from serving.api import create_app
    client = TestClient(create_app(make_settings(tmp_path, render_lane="thread"), product=store,
                                   registry=FakeRegistry()))
    first = client.get("/overlay/2021-07-02.png")
    assert first.status_code == 200
    drawn = list((store.root / "overlays" / "2021").glob("etfuse_et_2021-07-02_*.png"))
    assert len(drawn) == 1
    drawn[0].unlink()                                    # the next answer comes from the memory cache
    assert client.get("/overlay/2021-07-02.png").content == first.content
    assert not drawn[0].exists()

    write(store, DAYS[1], 5.5, "rewritten")              # a new version of the day: new file SHA-256
    second = client.get("/overlay/2021-07-02.png")
    assert second.status_code == 200 and second.content != first.content
    old_px = np.asarray(Image.open(io.BytesIO(first.content)))[50, 50]
    new_px = np.asarray(Image.open(io.BytesIO(second.content)))[50, 50]
    assert tuple(old_px) != tuple(new_px) and new_px[3] == 255
    record = store.record(DAYS[1])
    assert [p.name for p in (store.root / "overlays" / "2021").glob("etfuse_et_2021-07-02_*.png")] == \
        [f"etfuse_et_2021-07-02_{record.file_sha256[:16]}.png"]
    # the other days' pictures are untouched by the rewrite
    assert client.get("/overlay/2021-07-01.png").status_code == 200
