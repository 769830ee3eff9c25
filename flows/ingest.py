"""The ingest flow: one Prefect task per landing file; the work itself is etfuse.ingest."""

from __future__ import annotations

from datetime import date

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from etfuse.ingest import IngestContext, IngestReport, LandingFile, discover, ingest_file
from etfuse.mosaic import check_missing_tiles
from flows.alerting import alert_on_failure
from flows.common import flow_settings


@task(name="ingest-file", task_run_name="ingest {lf.source}/{lf.path.name}", cache_policy=NO_CACHE)
def ingest_file_task(lf: LandingFile, ctx: IngestContext) -> dict:
    outcome = ingest_file(lf, ctx)
    get_run_logger().info("%s/%s: %s %s %s", lf.source, lf.path.name, outcome.status, outcome.changes or "",
                          " ".join(outcome.alerts))
    return outcome.to_json()


@flow(name="ingest", on_failure=[alert_on_failure], on_crashed=[alert_on_failure], description="Validate every new landing file; accept it into the harmonised store or "
                                 "quarantine it, and alert.")
def ingest_flow(config: str | None = None, home: str | None = None, today: date | None = None) -> dict:
    settings = flow_settings(config, home)
    ctx = IngestContext.create(settings, today=today)
    files, skipped = discover(settings)
    logger = get_run_logger()
    for line in skipped:
        logger.warning("skipped %s", line)
    outcomes = [ingest_file_task(lf, ctx) for lf in files]
    for alert in check_missing_tiles(ctx.store, settings, ctx.dispatcher):
        logger.warning("%s", alert.summary)
    ctx.dispatcher.flush()
    report = {"counts": {}, "outcomes": outcomes, "skipped": skipped}
    for o in outcomes:
        report["counts"][o["status"]] = report["counts"].get(o["status"], 0) + 1
    logger.info("ingest: %s", report["counts"] or "nothing new")
    return report


__all__ = ["ingest_flow", "IngestReport"]
