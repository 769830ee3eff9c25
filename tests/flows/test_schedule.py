"""Scheduled deployments against a real `prefect server` process: registered with the crons of the
settings, and a triggered run of `daily` executed by `etfuse schedule` (prefect.serve)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.services import free_port, stop_group, wait_http


@pytest.fixture
def prefect_server(tmp_path):
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
           "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health", 120, proc)
        yield f"http://127.0.0.1:{port}/api"
    finally:
        stop_group(proc)


@pytest.mark.slow
def test_schedule_registers_crons_and_runs_daily(prefect_server, tmp_path):
    home = tmp_path / "home"
    config = tmp_path / "etfuse.yaml"
    config.write_text(json.dumps({"home": str(home), "region": "test", "prefect": {"api_url": prefect_server},
                                  "schedule": {"daily_cron": "15 5 * * *", "retrain_cron": "0 2 1 * *"}}))
    env = {**os.environ, "ETFUSE_CONFIG": str(config)}          # the server comes from prefect.api_url alone
    env.pop("PREFECT_API_URL", None)
    serving = subprocess.Popen([sys.executable, "-m", "flows.cli", "schedule"], env=env, cwd=os.getcwd(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    # Prefect reads PREFECT_API_URL once, at import: when an earlier test in this worker imported it, an
    # environment variable set now is ignored and the client would talk to another (ephemeral) API.
    from prefect.settings import PREFECT_API_URL, temporary_settings
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        try:
            _check_schedule(serving, config, home)
        finally:
            stop_group(serving)


def _check_schedule(serving: subprocess.Popen, config, home) -> None:
    """Both deployments registered with the settings' crons, and a triggered `daily` run completes."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    import asyncio

    async def deployments():
        async with get_client() as client:
            return await client.read_deployments()

    deadline = time.time() + 180                 # generous: CI runs this beside other slow tests on 2 cores
    found = []
    names = {"daily", "retrain", "history", "rollback", "backfill", "quarantine-release"}
    while time.time() < deadline and {d.name for d in found} != names:
        if serving.poll() is not None:
            pytest.fail(f"`etfuse schedule` exited with {serving.returncode}:\n{serving.stdout.read()[-4000:]}")
        found = asyncio.run(deployments())
        time.sleep(1)
    if {d.name for d in found} != names:
        stop_group(serving)
        pytest.fail(f"deployments not registered within 180 s; `etfuse schedule` printed:\n"
                    f"{serving.communicate(timeout=30)[0][-4000:]}")
    crons = {d.name: d.schedules[0].schedule.cron for d in found if d.schedules}
    assert crons == {"daily": "15 5 * * *", "retrain": "0 2 1 * *"}      # the others run on demand
    limits = {d.name: (d.global_concurrency_limit.limit if d.global_concurrency_limit else d.concurrency_limit)
              for d in found}
    assert all(limits[n] == 1 for n in ("daily", "history", "rollback", "backfill")), limits
    queued = {d.name: d.concurrency_options.collision_strategy for d in found if d.concurrency_options}
    assert {str(v).rsplit(".", 1)[-1] for v in queued.values()} == {"ENQUEUE"}
    assert all(d.parameters == {"config": str(config)} for d in found)
    run = run_deployment("daily/daily", timeout=240)
    assert run.state.is_completed(), run.state
    assert (home / "alerts" / "alerts.jsonl").exists()       # the run ran with our settings (no model yet: a warning)


def test_schedules_need_a_server(settings, monkeypatch):
    from flows.deployments import ScheduleError, require_server
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(ScheduleError, match="schedules need a Prefect server"):
        require_server(settings)
