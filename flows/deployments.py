"""Scheduled deployments of the flows: daily (ingest + update), monthly retrain, and one
``fetch-<source>`` per enabled fetch source (``fetch.<source>.cron``).

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

ENTRYPOINTS = {"daily": "flows/daily.py:daily_flow", "retrain": "flows/retrain.py:retrain_flow",
               "fetch": "flows/fetch.py:fetch_flow"}


class ScheduleError(EtfuseError):
    """Scheduling cannot work as configured."""


def require_server(settings) -> str:
    url = os.environ.get("PREFECT_API_URL") or settings.prefect.api_url
    if not url:
        raise ScheduleError("schedules need a Prefect server: set prefect.api_url (or PREFECT_API_URL), e.g. "
                            "http://127.0.0.1:4200/api after `prefect server start`; the ephemeral API never fires them")
    return url


@contextmanager
def _server(settings) -> Iterator[str]:
    """Talk to the configured server.  Prefect reads PREFECT_API_URL once, when it is imported, so
    setting the variable is not enough in a process that has imported it already; the variable is
    set too for the flow-run processes the runner starts."""
    from prefect.settings import PREFECT_API_URL, temporary_settings
    url = require_server(settings)
    os.environ["PREFECT_API_URL"] = url
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url


def _specs(settings, config: str | None) -> list[tuple[str, object, str, dict]]:
    from etfuse.fetch.run import enabled_sources
    from flows.daily import daily_flow
    from flows.fetch import fetch_flow
    from flows.retrain import retrain_flow
    params = {"config": config} if config else {}
    # one fetch deployment per enabled source, on that source's own cron (fetch.<source>.cron)
    fetches = [(f"fetch-{name}", fetch_flow, getattr(settings.fetch, name).cron, {**params, "sources": [name]})
               for name in enabled_sources(settings)]
    return [("daily", daily_flow, settings.schedule.daily_cron, params),
            ("retrain", retrain_flow, settings.schedule.retrain_cron, params), *fetches]


def runner_deployments(settings, config: str | None = None) -> list:
    """RunnerDeployments for ``prefect.serve``."""
    from prefect.client.schemas.schedules import CronSchedule
    out = []
    for name, flow, cron, params in _specs(settings, config):
        out.append(flow.to_deployment(name=name, schedules=[CronSchedule(cron=cron, timezone=settings.schedule.timezone)],
                                      parameters=params, tags=["etfuse"],
                                      description=f"etfuse {name}, cron '{cron}' ({settings.schedule.timezone})"))
    return out


def serve(settings, config: str | None = None) -> None:
    """Register and run the scheduled deployments in this process until it is stopped."""
    from prefect import serve as prefect_serve
    with _server(settings):
        prefect_serve(*runner_deployments(settings, config), pause_on_shutdown=False)


def register(settings, *, source: str, config: str | None = None) -> list[str]:
    """Register the deployments for ``settings.schedule.work_pool`` with code at ``source`` (a folder)."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import Flow
    ids = []
    with _server(settings):
        for name, _, cron, params in _specs(settings, config):
            flow = Flow.from_source(source=source, entrypoint=ENTRYPOINTS[name.split("-")[0]])
            ids.append(str(flow.deploy(name=name, work_pool_name=settings.schedule.work_pool, build=False, push=False,
                                       schedules=[CronSchedule(cron=cron, timezone=settings.schedule.timezone)],
                                       parameters=params, tags=["etfuse"], print_next_steps=False)))
    return ids
