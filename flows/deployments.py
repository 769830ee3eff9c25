"""Scheduled deployments of the flows: daily (ingest + update), monthly retrain, one
``fetch-<source>`` per enabled fetch source (``fetch.<source>.cron``), and the on-demand ones.

Two ways to run them, both reading the crons from ``settings.schedule``:

* ``etfuse schedule``: one long-running process that registers the deployments with the Prefect
  server and runs their scheduled runs itself (``prefect.serve``); no work pool needed.
* ``register(settings, source=...)``: registers them for a work pool (``schedule.work_pool``) so a
  ``prefect worker`` runs them (the docker-compose production stack).

Schedules need a real Prefect server (``PREFECT_API_URL`` / ``prefect.api_url``): the ephemeral
API never fires them.  Missed runs (a worker that was down) stay scheduled as *Late* and run when
it returns; every flow only does what is not done yet, so a late or repeated run is safe.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from etfuse.errors import EtfuseError
from etfuse.settings import Settings

ENTRYPOINTS = {"daily": "flows/daily.py:daily_flow", "retrain": "flows/retrain.py:retrain_flow",
               "history": "flows/history.py:history_flow", "rollback": "flows/rollback.py:rollback_flow",
               "backfill": "flows/backfill.py:backfill_flow",
               "quarantine-release": "flows/quarantine.py:quarantine_release_flow",
               "fetch": "flows/fetch.py:fetch_flow"}
#: Deployments that write the product: one run at a time each, further runs wait in the queue
#: (ENQUEUE) instead of failing; across deployments the product lock orders them (the daily run first).
PRODUCT_WRITERS = ("daily", "history", "rollback", "backfill")


class ScheduleError(EtfuseError):
    """Scheduling cannot work as configured."""


def require_server(settings: Settings) -> str:
    url = os.environ.get("PREFECT_API_URL") or settings.prefect.api_url
    if not url:
        raise ScheduleError("schedules need a Prefect server: set prefect.api_url (or PREFECT_API_URL), e.g. "
                            "http://127.0.0.1:4200/api after `prefect server start`; the ephemeral API never fires them")
    return url


@contextmanager
def _server(settings: Settings) -> Iterator[str]:
    """Talk to the configured server.  Prefect reads PREFECT_API_URL once, when it is imported, so
    setting the variable is not enough in a process that has imported it already; the variable is
    set too for the flow-run processes the runner starts."""
    from prefect.settings import PREFECT_API_URL, temporary_settings
    url = require_server(settings)
    os.environ["PREFECT_API_URL"] = url
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url


def _specs(settings: Settings, config: str | None) -> list[tuple[str, object, str | None, dict]]:
    """(name, flow, cron or None for run-on-demand, parameters) of every deployment."""
    from etfuse.fetch.run import enabled_sources
    from flows.backfill import backfill_flow
    from flows.daily import daily_flow
    from flows.fetch import fetch_flow
    from flows.history import history_flow
    from flows.quarantine import quarantine_release_flow
    from flows.retrain import retrain_flow
    from flows.rollback import rollback_flow
    params = {"config": config} if config else {}
    # one fetch deployment per enabled source, on that source's own cron (fetch.<source>.cron)
    fetches = [(f"fetch-{name}", fetch_flow, getattr(settings.fetch, name).cron, {**params, "sources": [name]})
               for name in enabled_sources(settings)]
    return [("daily", daily_flow, settings.schedule.daily_cron, params),
            ("retrain", retrain_flow, settings.schedule.retrain_cron, params),
            ("history", history_flow, None, params),
            ("rollback", rollback_flow, None, params),
            ("backfill", backfill_flow, None, params),
            ("quarantine-release", quarantine_release_flow, None, params), *fetches]


def _entrypoint(name: str) -> str:
    """The flow behind a deployment name (``fetch-<source>`` deployments all run the fetch flow)."""
    return ENTRYPOINTS["fetch"] if name.startswith("fetch-") else ENTRYPOINTS[name]


def concurrency(name: str):
    """One run at a time for the product writers, the others queued (not failed); None otherwise."""
    if name not in PRODUCT_WRITERS:
        return None
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    return ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def _schedules(settings: Settings, cron: str | None) -> list:
    from prefect.client.schemas.schedules import CronSchedule
    return [CronSchedule(cron=cron, timezone=settings.schedule.timezone)] if cron else []


def runner_deployments(settings: Settings, config: str | None = None) -> list:
    """RunnerDeployments for ``prefect.serve``."""
    out = []
    for name, flow, cron, params in _specs(settings, config):
        when = f"cron '{cron}' ({settings.schedule.timezone})" if cron else "on demand (Prefect UI, or started by a flow)"
        out.append(flow.to_deployment(name=name, schedules=_schedules(settings, cron), parameters=params,
                                      tags=["etfuse"] + (["etfuse-product"] if name in PRODUCT_WRITERS else []),
                                      concurrency_limit=concurrency(name), description=f"etfuse {name}, {when}"))
    return out


def serve(settings: Settings, config: str | None = None) -> None:
    """Register and run the scheduled deployments in this process until it is stopped."""
    from prefect import serve as prefect_serve
    with _server(settings):
        prefect_serve(*runner_deployments(settings, config), pause_on_shutdown=False)


def register(settings: Settings, *, source: str, config: str | None = None) -> list[str]:
    """Register the deployments for ``settings.schedule.work_pool`` with code at ``source`` (a folder)."""
    from prefect.flows import Flow
    ids = []
    with _server(settings):
        for name, _, cron, params in _specs(settings, config):
            flow = Flow.from_source(source=source, entrypoint=_entrypoint(name))
            ids.append(str(flow.deploy(name=name, work_pool_name=settings.schedule.work_pool, build=False, push=False,
                                       schedules=_schedules(settings, cron), parameters=params,
                                       tags=["etfuse"] + (["etfuse-product"] if name in PRODUCT_WRITERS else []),
                                       concurrency_limit=concurrency(name), print_next_steps=False)))
    return ids
