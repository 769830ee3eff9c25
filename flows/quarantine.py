"""The quarantine-release flow: put a fixed quarantined file back into landing, then ingest it.

A deployment (flows/deployments.py), so an operator releases a file from the Prefect UI instead of
``docker exec ... etfuse quarantine release``.  The work is etfuse.quarantine.release.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.alerting import alert_on_failure
from flows.common import flow_settings


@flow(name="quarantine-release", on_failure=[alert_on_failure], on_crashed=[alert_on_failure],
      description="Move a quarantined file (NAME or SOURCE/NAME, as `etfuse quarantine list` shows) back to "
                  "landing and, unless ingest=false, ingest it at once.")
def quarantine_release_flow(name: str, config: str | None = None, home: str | None = None,
                            ingest: bool = True) -> dict:
    from etfuse.quarantine import release
    settings = flow_settings(config, home)
    landed = release(settings, name)
    logger = get_run_logger()
    logger.info("released %s to %s", name, landed.path)
    result: dict = {"released": str(landed.path), "source": landed.source}
    if ingest:
        from flows.ingest import ingest_flow
        result["ingest"] = ingest_flow(config=config, home=home)["counts"]
    return result
