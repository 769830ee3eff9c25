"""Every flow through Prefect: retrain, update, daily, rollback, backfill on a 2-worker LocalCluster
(equal to a sequential update), and a failing run that raises an alert."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.conftest import SMALL_WORLD


@pytest.fixture(scope="module")
def scenario(small_world, tmp_path_factory, prefect_harness):
    """A home with the small world's inputs harmonised (GLEAM withheld for the daily test)."""
    from etfuse.harmonise import harmonise_into_store
    from etfuse.settings import load_settings
    from etfuse.store import HarmonisedStore
    w, s, e, n = SMALL_WORLD["bbox"]
    home = tmp_path_factory.mktemp("flows")
    config = home / "etfuse.yaml"
    config.write_text(json.dumps({
        "home": str(home), "window_days": 5,
        "region": {"name": "small", "lon_min": w, "lon_max": e, "lat_min": s, "lat_max": n,
                   "resolution_deg": SMALL_WORLD["resolution_deg"], "margin_deg": SMALL_WORLD["margin_deg"]},
        "static": {"elevation_file": str(small_world / "static" / "elevation.nc")},
        "training": {"epochs": 2, "hidden": 8, "heldout_station_fraction": 0.3},
        "serving": {"quicklooks": False},
    }))
    settings = load_settings(config)
    store = HarmonisedStore(settings.harmonised)
    for source in ("era5land", "modis", "cma", "stations"):
        for path in sorted((small_world / "landing" / source).glob("*")):
            harmonise_into_store(source, path, store, settings=settings)
    return settings, str(config)


def _alerts(settings):
    path = settings.folder("alerts") / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _task_states(flow_run_id) -> dict[str, str]:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name: run.state.type.value for run in asyncio.run(read())}


def _completed_chunk_runs() -> int:
    """Completed backfill chunks (task runs ``backfill START..END``) the flow's Prefect API knows."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="backfill 20")))
    return sum(run.state.type.value == "COMPLETED" for run in asyncio.run(read()))


@pytest.mark.slow
def test_flows_end_to_end(scenario, small_world):
    from flows.backfill import run_backfill
    from flows.daily import daily_flow
    from flows.retrain import retrain_flow
    from flows.rollback import rollback_flow
    from flows.update import update_flow
    from serving.product import ProductStore
    from training.registry import ModelRegistry
    settings, config = scenario

    # before any model: update computes nothing and says so (a warning, not a failure: no failed task either)
    quiet_state = update_flow(config=config, return_state=True)
    quiet = quiet_state.result()
    assert quiet["written"] == {} and "no product day computed" in quiet["summary"]
    # only the champion lookup ran (a task now: it retries MLflow), and it completed
    assert set(_task_states(quiet_state.state_details.flow_run_id).values()) <= {"COMPLETED"}
    assert [a["kind"] for a in _alerts(settings) if a.get("record") == "alert"] == ["no_model"]

    # a failing run raises a critical alert: a corrupt ledger makes ingest fail
    ledger = settings.harmonised / "ledger.sqlite"
    saved = ledger.read_bytes()
    ledger.write_bytes(b"this is not a database" * 100)
    state = daily_flow(config=config, return_state=True)
    ledger.write_bytes(saved)
    assert state.is_failed()
    failed = [a for a in _alerts(settings) if a.get("kind") == "flow_failed"]
    assert failed and failed[-1]["severity"] == "critical" and "daily" in " ".join(a["summary"] for a in failed)

    # retrain registers v1; make it champion whatever the gate said (a 2-epoch model)
    v1 = retrain_flow(config=config)
    registry = ModelRegistry(settings)
    assert v1["version"] == 1 and "fused" in v1["table"]
    if not v1["promoted"]:
        registry.promote(1, actor="test", reason="first model")
    assert registry.champion().version == 1

    # update computes every day with ERA5-Land, all provisional (no GLEAM yet)
    # (today first: the newest update.recent_days now, the older ones by the history recompute, which
    # runs in the same flow run here because no Prefect server has the `history` deployment)
    up = update_flow(config=config)
    product = ProductStore(settings)
    assert len(up["written"]) == settings.update.recent_days and up["deferred"] == len(product.records()) - 14
    assert len(product.records()) > 30 and "history recompute" in up["history"]
    assert max(up["written"]) == f"{max(r.day for r in product.records()):%Y-%m-%d}"   # the newest day among them
    assert {r.status for r in product.records()} == {"provisional"}

    # daily: a GLEAM delivery lands; ingest accepts it and update rewrites the days it touches
    landing = settings.folder("landing") / "gleam"
    landing.mkdir(parents=True, exist_ok=True)
    gleam = next((small_world / "landing" / "gleam").glob("*.nc"))
    shutil.copy2(gleam, landing / gleam.name)
    daily = daily_flow(config=config, today=pd.Timestamp("2021-08-01").date())
    assert daily["ingest"]["counts"] == {"accepted": 1}
    assert set(daily["update"]["written"].values()) == {"replaced"}
    assert "final" in {r.status for r in ProductStore(settings).records()}

    # a second model, promoted by hand, rewrites the product; the rollback flow restores v1's days
    v2 = retrain_flow(config=config)
    assert v2["version"] == 2
    if not v2["promoted"]:
        registry.promote(2, actor="test", reason="to roll it back")
    update_flow(config=config)
    assert {r.model_version for r in ProductStore(settings).records()} == {2}
    back = rollback_flow(config=config, reason="test rollback")
    assert back["from"] == 2 and back["to"] == 1 and back["days"] + back["deferred"] == len(product.records())
    assert "history recompute" in back["history"]
    assert {r.model_version for r in ProductStore(settings).records()} == {1}
    assert any(h.action == "rollback" for h in registry.history())

    # backfill on a local Dask cluster with 2 workers equals the sequential update
    sequential = {r.day: ProductStore(settings).read_field(r.day) for r in ProductStore(settings).records()}
    shutil.rmtree(settings.folder("product"))
    chunks_before = _completed_chunk_runs()
    result = run_backfill(config=config, home=None, start=None, end=None, workers=2, chunk_days=12)
    assert result["chunks"] >= 3 and result["days"] == len(sequential)
    # the workers reported their chunks to the flow's Prefect API, not to temporary servers of their own
    assert _completed_chunk_runs() - chunks_before == result["chunks"]
    assert set(result["providers"]) == set(result["written"]) and set(result["providers"].values()) == {"CPUExecutionProvider"}
    fresh = ProductStore(settings)
    for day, field in sequential.items():
        np.testing.assert_array_equal(fresh.read_field(day), field)
    assert fresh.year_path(2021).exists()
