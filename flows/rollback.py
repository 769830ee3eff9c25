"""The rollback flow: move the champion alias back and recompute the days the rolled-back version wrote."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from etfuse.settings import Settings
from flows.alerting import alert_on_failure
from flows.common import flow_settings


# no retries: a rollback is not idempotent (a second attempt after a lost answer would walk back twice)
@task(name="move-champion-alias", cache_policy=NO_CACHE, timeout_seconds=300)
def move_alias(settings: Settings, to: int | None, actor: str, reason: str) -> tuple[int | None, int]:
    from training.registry import ModelRegistry
    registry = ModelRegistry(settings)
    before = registry.champion()
    after = registry.rollback(to=to, actor=actor, reason=reason)
    return (before.version if before else None), after


@task(name="recompute-days-of-rolled-back-version", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[30, 120])
def recompute(settings: Settings, rolled_back: int) -> dict:
    """The newest ``update.recent_days`` of them now; the older ones are left to the history recompute."""
    from serving.update import run_update
    from serving.wiring import ServingParts
    parts = ServingParts(settings)
    product = parts.product
    days = [r.day for r in product.records() if r.model_version == rolled_back]
    if not days:
        return {"days": 0, "summary": f"no product day was written by v{rolled_back}"}
    report = run_update(settings, predictor=parts.predictor, product=product, start=min(days), end=max(days),
                        newest=True, max_days=settings.update.recent_days)
    return {"days": len(report.written), "summary": report.summary(), "deferred": len(report.deferred)}


@flow(name="rollback", on_failure=[alert_on_failure], on_crashed=[alert_on_failure],
      description="Move the champion alias back (to a given version or the previous champion), record who and "
                  "why, and recompute the product days the rolled-back version wrote.")
def rollback_flow(config: str | None = None, home: str | None = None, to: int | None = None,
                  reason: str = "rollback", actor: str = "flow:rollback", recompute_days: bool = True) -> dict:
    settings = flow_settings(config, home)
    before, after = move_alias(settings, to, actor, reason)
    result = {"from": before, "to": after}
    if recompute_days and before is not None and before != after:
        result.update(recompute(settings, before))
        if result.get("deferred"):
            from flows.history import hand_off_history
            result["history"] = hand_off_history(config, home)
    get_run_logger().info("rollback: champion v%s -> v%s; %s", before, after, result.get("summary", ""))
    return result
