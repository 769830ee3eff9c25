"""The retrain flow: train on everything ingested so far, evaluate, register, gate."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from etfuse.settings import Settings
from flows.alerting import alert_on_failure
from flows.common import flow_settings


@task(name="train-evaluate-register", cache_policy=NO_CACHE)
def train_task(settings: Settings, actor: str) -> dict:
    from training.pipeline import format_table, run_training
    from training.registry import ModelRegistry
    logger = get_run_logger()
    outcome = run_training(settings, registry=ModelRegistry(settings), actor=actor, echo=logger.info)
    return {"version": outcome.version, "promoted": bool(outcome.decision and outcome.decision.promoted),
            "decision": outcome.decision.summary() if outcome.decision else None,
            "table": format_table(outcome.table), "metrics": outcome.metrics,
            "seconds": outcome.seconds}


@flow(name="retrain", on_failure=[alert_on_failure], on_crashed=[alert_on_failure],
      description="Train a GCN-GRU on the harmonised store (the data accepted so far), evaluate it on held-out "
                  "stations, register it in MLflow as challenger and promote it if it passes the gate.")
def retrain_flow(config: str | None = None, home: str | None = None, actor: str = "flow:retrain") -> dict:
    settings = flow_settings(config, home)
    result = train_task(settings, actor)
    get_run_logger().info("retrain: version %s, %s", result["version"], result["decision"])
    return result
