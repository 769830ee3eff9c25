"""Operations helpers of the CLI: what the daily run does after ingest and update (without Prefect)."""

from __future__ import annotations

import typer

from etfuse.settings import Settings


def today_first(settings: Settings, predictor, product) -> None:
    """The newest ``update.recent_days`` stale days first, then (the same process, lower priority per
    chunk) the history recompute; prints both summaries."""
    from serving.history import recompute_history
    from serving.update import run_update
    report = run_update(settings, predictor=predictor, product=product, newest=True,
                        max_days=settings.update.recent_days)
    typer.echo(report.summary())
    if report.deferred:
        typer.echo(recompute_history(settings, predictor=predictor, product=product).summary())


def after_daily(settings: Settings) -> None:
    """Overdue-source alerts, then the dead-man's-switch ping (the direct form of the daily flow's tail)."""
    from etfuse.alerts import AlertDispatcher
    from etfuse.freshness import check_overdue, ping_heartbeat
    from etfuse.store import HarmonisedStore
    dispatcher = AlertDispatcher(settings)
    for alert in check_overdue(HarmonisedStore.of(settings), settings, dispatcher):
        typer.echo(f"warning: {alert.summary}", err=True)
    dispatcher.flush()
    if ping_heartbeat(settings) is False:
        typer.echo("warning: the heartbeat ping failed (freshness.heartbeat_url)", err=True)


def watch() -> None:
    """Watch landing/ and start the ingest + update deployment (watch.deployment) when files land."""
    from flows.common import cli_config_path, cli_settings
    from flows.deployments import _server
    from flows.watch import deployment_trigger, watch_landing
    settings = cli_settings()
    with _server(settings):
        start, pending = deployment_trigger(settings, config=cli_config_path())
        typer.echo(f"watching {settings.folder('landing')} (quiet {settings.watch.quiet_s:g} s, "
                   f"at most {settings.watch.max_wait_s:g} s) -> {settings.watch.deployment}")
        watch_landing(settings, start, pending=pending)
