"""The history flow: the background recompute of every stale product day (serving/history.py).

Started by the daily/update run when it left older stale days (a promotion or rollback made them
stale), by the rollback flow, or by hand from the Prefect UI (deployment ``history``).  It lowers its
own CPU priority, shows its progress as a Prefect progress artifact, and gives way to a daily run
between chunks.
"""

from __future__ import annotations

import os
from datetime import date

from prefect import flow, get_run_logger

from flows.alerting import alert_on_failure
from flows.common import flow_settings

DEPLOYMENT = "history/history"


def _progress_reporter():
    """Log lines, and a progress artifact in the Prefect UI when the run has an API to write to."""
    logger = get_run_logger()
    state: dict = {"artifact": None}

    def report(done: int, total: int, first, last) -> None:
        percent = 100.0 * done / total if total else 100.0
        logger.info("history: %d/%d days (%.0f %%), chunk %s..%s", done, total, percent,
                    f"{first:%Y-%m-%d}", f"{last:%Y-%m-%d}")
        try:
            from prefect.artifacts import create_progress_artifact, update_progress_artifact
            if state["artifact"] is None:
                state["artifact"] = create_progress_artifact(progress=percent, key="history-recompute",
                                                             description="history recompute: days written")
            else:
                update_progress_artifact(artifact_id=state["artifact"], progress=percent)
        except Exception as exc:  # noqa: BLE001 - progress display must never stop the work
            logger.debug("progress artifact not updated: %s", exc)
    return report


@flow(name="history", on_failure=[alert_on_failure], on_crashed=[alert_on_failure],
      description="Recompute every stale product day in the background, newest chunk first, giving way to the "
                  "daily run between chunks; resumable (it plans again from the product on every chunk).")
def history_flow(config: str | None = None, home: str | None = None, since: date | None = None,
                 until: date | None = None, chunk_days: int | None = None, nice: bool = True) -> dict:
    from serving.history import recompute_history
    from serving.wiring import ServingParts
    settings = flow_settings(config, home)
    if nice and settings.update.history_nice:
        os.nice(settings.update.history_nice)                 # this flow run's process only
    parts = ServingParts(settings)
    report = recompute_history(settings, predictor=parts.predictor, product=parts.product, start=since, end=until,
                               chunk_days=chunk_days, progress=_progress_reporter())
    get_run_logger().info(report.summary())
    return {"summary": report.summary(), "days": len(report.written), "chunks": report.chunks,
            "model_version": report.model_version}


def hand_off_history(config: str | None, home: str | None) -> str:
    """Start the history recompute in the background: a run of the ``history`` deployment when a
    Prefect server has it (returns at once); otherwise, here, after the newest days (returns when done)."""
    from prefect.deployments import run_deployment
    logger = get_run_logger()
    if os.environ.get("PREFECT_API_URL"):
        try:
            run = run_deployment(DEPLOYMENT, parameters={"config": config, "home": home}, timeout=0,
                                 as_subflow=False)
            logger.info("history recompute handed to deployment %s (run %s)", DEPLOYMENT, run.id)
            return f"deployment run {run.id}"
        except Exception as exc:  # noqa: BLE001 - no deployment registered: do it here instead
            logger.warning("deployment %s not available (%s); recomputing the history in this run", DEPLOYMENT, exc)
    result = history_flow(config=config, home=home, nice=False)
    return result["summary"]
