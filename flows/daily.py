"""The daily flow an operator schedules: ingest, then update, then freshness and the heartbeat."""

from __future__ import annotations

from datetime import date

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from etfuse.settings import Settings
from flows.alerting import alert_on_failure
from flows.common import flow_settings
from flows.ingest import ingest_flow
from flows.update import update_flow


@task(name="check-freshness", cache_policy=NO_CACHE)
def check_freshness(settings: Settings) -> list[str]:
    """An ``overdue`` alert per late source (once per freshness.alert_every_hours)."""
    from etfuse.alerts import AlertDispatcher
    from etfuse.freshness import check_overdue
    from etfuse.store import HarmonisedStore
    dispatcher = AlertDispatcher(settings)
    sent = check_overdue(HarmonisedStore.of(settings), settings, dispatcher)
    dispatcher.flush()
    for alert in sent:
        get_run_logger().warning(alert.summary)
    return [alert.summary for alert in sent]


@task(name="heartbeat", cache_policy=NO_CACHE, timeout_seconds=120)
def heartbeat(settings: Settings) -> bool | None:
    """Ping the dead-man's switch (freshness.heartbeat_url) once the run has succeeded."""
    from etfuse.freshness import ping_heartbeat
    return ping_heartbeat(settings)


@flow(name="daily", on_failure=[alert_on_failure], on_crashed=[alert_on_failure],
      description="Ingest everything new in the landing zone, then compute every stale product day. Safe to run "
                  "late, twice or after missed runs: both steps only do what is not done yet.")
def daily_flow(config: str | None = None, home: str | None = None, today: date | None = None) -> dict:
    settings = flow_settings(config, home)
    ingest = ingest_flow(config=config, home=home, today=today)
    overdue = check_freshness(settings)
    update = update_flow(config=config, home=home)
    get_run_logger().info("daily: ingest %s; %s", ingest["counts"] or "nothing new", update["summary"])
    return {"ingest": ingest, "update": update, "overdue": overdue, "heartbeat": heartbeat(settings)}
