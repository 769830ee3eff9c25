"""Rollback, backfill, history and quarantine release are deployments; product writers queue (limit 1)."""

from __future__ import annotations

from pathlib import Path


def test_deployments_and_limits(settings):
    from flows.deployments import ENTRYPOINTS, PRODUCT_WRITERS, runner_deployments
    deps = {d.name: d for d in runner_deployments(settings, config="/etc/etfuse.yaml")}
    assert set(deps) == {"daily", "retrain", "history", "rollback", "backfill", "quarantine-release"}
    assert set(ENTRYPOINTS) == set(deps) | {"fetch"}     # fetch-<source> deployments exist once a source is enabled
    assert {n for n, d in deps.items() if d.schedules} == {"daily", "retrain"}
    for name in PRODUCT_WRITERS:
        d = deps[name]
        assert d.concurrency_limit == 1 and str(d.concurrency_options.collision_strategy).endswith("ENQUEUE"), name
        assert "etfuse-product" in deps[name].tags
    assert deps["retrain"].concurrency_limit is None
    assert all(d.parameters == {"config": "/etc/etfuse.yaml"} for d in deps.values())


def test_flow_tasks_talking_to_services_retry(settings):
    from flows.daily import heartbeat
    from flows.rollback import move_alias, recompute
    from flows.update import champion_version, compute_days
    assert champion_version.retries == 3 and champion_version.timeout_seconds == 120
    assert compute_days.retries == 2 and recompute.retries == 2
    assert move_alias.retries == 0 and move_alias.timeout_seconds == 300    # not idempotent: never retried
    assert heartbeat.timeout_seconds == 120


def test_every_deployment_name_has_its_flow(settings):
    """Registration from source finds each deployment's flow, fetch-<source> ones included."""
    from flows.deployments import ENTRYPOINTS, _entrypoint
    assert _entrypoint("fetch-gleam") == _entrypoint("fetch-era5land") == ENTRYPOINTS["fetch"]
    assert _entrypoint("quarantine-release") == "flows/quarantine.py:quarantine_release_flow"
    for name, path in ENTRYPOINTS.items():
        assert _entrypoint(name) == path
        module, flow = path.split(":")
        source = (Path(__file__).resolve().parents[2] / module).read_text()
        assert f"def {flow}(" in source, path
