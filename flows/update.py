"""The update flow: every stale product day in date order (etfuse.serving.update does the work)."""

from __future__ import annotations

import sys
from datetime import date

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from etfuse.settings import Settings
from flows.alerting import alert_on_failure
from flows.common import flow_settings


def _progress_printer(total_hint: str):
    """A rich progress bar on a terminal, log lines otherwise (Prefect captures them)."""
    logger = get_run_logger()
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        bar = Progress(TextColumn("update"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                       TimeRemainingColumn(), transient=True)
        bar.start()
        job = bar.add_task("", total=None)

        def progress(k, n, day):
            bar.update(job, completed=k, total=n, description=f"{day:%Y-%m-%d}")
            if k == n:
                bar.stop()
        return progress

    def log_progress(k, n, day):
        logger.info("product day %s written (%d/%d)", f"{day:%Y-%m-%d}", k, n)
    return log_progress


@task(name="compute-days", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[30, 120])
def compute_days(settings: Settings, start, end, max_days: int | None = None) -> dict:
    """The newest stale days first (at most ``max_days``); retried: the model comes from MLflow/S3, and a
    retry only computes what is still stale."""
    from serving.update import run_update
    from serving.wiring import ServingParts
    parts = ServingParts(settings)
    report = run_update(settings, predictor=parts.predictor, product=parts.product, start=start, end=end,
                        progress=_progress_printer(""), newest=True, max_days=max_days)
    return {"summary": report.summary(), "model_version": report.model_version, "written": report.written,
            "providers": report.providers,
            "years_rebuilt": report.years_rebuilt, "deferred": len(report.deferred),
            "median_seconds_per_day": (sorted(report.seconds_per_day)[len(report.seconds_per_day) // 2]
                                       if report.seconds_per_day else None)}


@task(name="champion-version", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=exponential_backoff(5),
      timeout_seconds=120)
def champion_version(settings: Settings) -> int | None:
    """The champion's version from MLflow (None before the first promotion); retried with back-off."""
    from training.registry import ModelRegistry
    info = ModelRegistry(settings).champion()
    return None if info is None else info.version


@flow(name="update", on_failure=[alert_on_failure], on_crashed=[alert_on_failure], description="Compute every product day whose inputs are present and whose product is "
                                 "missing or stale (new or revised inputs, or a new champion), in date order.")
def update_flow(config: str | None = None, home: str | None = None, day: date | None = None,
                since: date | None = None, until: date | None = None, history: bool = True) -> dict:
    from serving.predictor import NoModelError
    settings = flow_settings(config, home)
    start, end = (day, day) if day else (since, until)
    # Before the first promotion there is nothing to compute: not a task failure in the UI, a warning.
    # An unreachable registry is not this case: the task then fails, and the flow alerts.
    if champion_version(settings) is None:
        return _no_model(settings, "the registry has no champion; train and promote one (`etfuse train`)")
    # an open-ended run (the daily one) computes only the newest days; an explicit range computes it all
    max_days = settings.update.recent_days if (start is None and end is None) else None
    try:
        result = compute_days(settings, start, end, max_days)
    except NoModelError as exc:                      # the champion alias removed since the check
        return _no_model(settings, str(exc))
    get_run_logger().info(result["summary"])
    if result["deferred"] and history:               # the newest days are written: the history follows
        from flows.history import hand_off_history
        result["history"] = hand_off_history(config, home)
    return result


def _no_model(settings: Settings, reason: str) -> dict:
    """Say once per alert window that no product day was computed, and why."""
    from etfuse.alerts import Alert, AlertDispatcher
    dispatcher = AlertDispatcher(settings)
    dispatcher.send(Alert(severity="warning", source="flow", kind="no_model", checks=["no_champion"],
                          summary=f"update computed nothing: {reason}"))
    dispatcher.flush()
    summary = f"no product day computed: {reason}"
    get_run_logger().warning(summary)
    return {"summary": summary, "model_version": None, "written": {}, "years_rebuilt": [],
            "median_seconds_per_day": None}
