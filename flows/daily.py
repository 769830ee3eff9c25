"""The daily flow an operator schedules: ingest, then update."""

from __future__ import annotations

from datetime import date

from prefect import flow, get_run_logger

from flows.alerting import alert_on_failure
from flows.ingest import ingest_flow
from flows.update import update_flow


@flow(name="daily", on_failure=[alert_on_failure], on_crashed=[alert_on_failure],
      description="Ingest everything new in the landing zone, then compute every stale product day. Safe to run "
                  "late, twice or after missed runs: both steps only do what is not done yet.")
def daily_flow(config: str | None = None, home: str | None = None, today: date | None = None) -> dict:
    ingest = ingest_flow(config=config, home=home, today=today)
    update = update_flow(config=config, home=home)
    get_run_logger().info("daily: ingest %s; %s", ingest["counts"] or "nothing new", update["summary"])
    return {"ingest": ingest, "update": update}
