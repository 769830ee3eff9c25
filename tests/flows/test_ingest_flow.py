"""The ingest flow runs through Prefect: one task run per landing file, results in the flow's return."""

from __future__ import annotations

import shutil

from tests.conftest import SMALL_WORLD


def test_ingest_flow_through_prefect(prefect_harness, small_world, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client

    from flows.ingest import ingest_flow
    w, s, e, n = SMALL_WORLD["bbox"]
    monkeypatch.setenv("ETFUSE_REGION__NAME", "small")
    for key, value in {"LON_MIN": w, "LON_MAX": e, "LAT_MIN": s, "LAT_MAX": n,
                       "RESOLUTION_DEG": SMALL_WORLD["resolution_deg"], "MARGIN_DEG": SMALL_WORLD["margin_deg"]}.items():
        monkeypatch.setenv(f"ETFUSE_REGION__{key}", str(value))
    home = tmp_path / "home"
    landing = home / "landing" / "gleam"
    landing.mkdir(parents=True)
    gleam = next((small_world / "landing" / "gleam").glob("*.nc"))
    shutil.copy2(gleam, landing / gleam.name)
    (landing / "broken.nc").write_bytes(b"not a netcdf")
    state = ingest_flow(home=str(home), return_state=True)
    assert state.is_completed()
    report = state.result()
    assert report["counts"] == {"accepted": 1, "quarantined": 1}
    assert (home / "quarantine" / "gleam" / "broken.nc.reason.json").exists()

    import asyncio

    async def task_runs():
        async with get_client() as client:
            runs = await client.read_task_runs()
            return sorted(r.name for r in runs if r.flow_run_id == state.state_details.flow_run_id)

    names = asyncio.run(task_runs())
    assert names == sorted([f"ingest gleam/{gleam.name}", "ingest gleam/broken.nc"])
