"""Operations helpers of the CLI: what the daily run does after ingest and update (without Prefect)."""

from __future__ import annotations

import typer

from etfuse.settings import Settings


def after_daily(settings: Settings) -> None:
    """Overdue-source alerts, then the dead-man's-switch ping (the direct form of the daily flow's tail)."""
    from etfuse.alerts import AlertDispatcher
    from etfuse.freshness import check_overdue, ping_heartbeat
    from etfuse.store import HarmonisedStore
    dispatcher = AlertDispatcher(settings)
    for alert in check_overdue(HarmonisedStore(settings.harmonised), settings, dispatcher):
        typer.echo(f"warning: {alert.summary}", err=True)
    dispatcher.flush()
    if ping_heartbeat(settings) is False:
        typer.echo("warning: the heartbeat ping failed (freshness.heartbeat_url)", err=True)
