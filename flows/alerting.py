"""Failed flow runs raise an alert through the configured channels (and Prefect's own notifications)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def alert_on_failure(flow, flow_run, state) -> None:
    """Prefect ``on_failure`` / ``on_crashed`` hook: one critical ``flow_failed`` alert per failed run."""
    from etfuse.alerts import Alert, AlertDispatcher
    from flows.common import flow_settings
    try:
        params = flow_run.parameters or {}
        settings = flow_settings(params.get("config"), params.get("home"))
        message = state.message or str(state.type)
        try:
            state.result(raise_on_failure=True)
        except BaseException as exc:  # noqa: BLE001 - we only want its type and text
            message = f"{type(exc).__name__}: {exc}"
            checks = [type(exc).__name__]
        else:
            checks = [str(state.type)]
        alert = Alert(severity="critical", source="flow", kind="flow_failed", checks=[f"flow:{flow.name}", *checks],
                      summary=f"flow {flow.name} run {flow_run.name} {state.type.value.lower()}: {message}"[:300],
                      details={"flow": flow.name, "flow_run_id": str(flow_run.id), "flow_run": flow_run.name,
                               "state": state.type.value, "message": message})
        dispatcher = AlertDispatcher(settings)
        dispatcher.send(alert)
        dispatcher.flush()
    except Exception:  # noqa: BLE001 - a failing hook must not hide the flow's own failure
        log.exception("could not raise the flow-failure alert")
