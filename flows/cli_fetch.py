"""``etfuse fetch``: bring each provider's new files into landing/ (direct, with progress bars)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Optional

import typer

from etfuse.settings import Settings
from flows.common import cli_config_path, cli_settings

#: fetch errors that are the operator's configuration (exit 2); others exit 1
_CONFIG_KINDS = ("credentials", "configuration")


def _day(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"expected a day YYYY-MM-DD, got {text!r}", param_hint=option) from None


def _size(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} B"


def print_report(report: dict, echo=typer.echo) -> None:
    for s in report["sources"]:
        for item in s.get("planned", []) if report["dry_run"] else []:
            days = f" [{item['days'][0]}..{item['days'][-1]}]" if item.get("days") else ""
            echo(f"  would fetch  {s['source']}: {item['origin']} -> landing/{item['target']}/{item['name']}"
                 f" ({_size(item['size'])}){days}{' ERA5T' if item.get('provisional') else ''}")
        for row in s.get("fetched", []):
            echo(f"  fetched      {s['source']}: landing/{row['target']}/{row['name']}  {_size(row['size'])}  "
                 f"sha256 {row['sha256'][:12]}  from {row['origin']}")
        for key, label in (("skipped", "skipped"), ("overdue", "overdue"), ("error", "FAILED")):
            if s.get(key):
                echo(f"  {label:<12} {s[key]}")
        if not report["dry_run"] and not s.get("error"):
            echo(f"fetch {s['source']}: {len(s.get('fetched', []))} new file(s)")


def fetch(
    sources: Annotated[Optional[list[str]], typer.Argument(help="era5land | modis | gleam | remote; default: the "
                                                                "sources enabled in settings (fetch.<source>.enabled).")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="First data day, YYYY-MM-DD (default: lookback_days back).")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="Last data day, YYYY-MM-DD (default: what the provider has by now).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be fetched; download nothing.")] = False,
    flow: Annotated[bool, typer.Option("--flow", help="Run as a Prefect flow run (logged) instead of directly with progress bars.")] = False,
) -> None:
    """Bring each provider's new files into landing/<source>/, once: ERA5-Land (CDS), MODIS MOD11A1
    (Earthdata), GLEAM (SFTP), remote drops (any fsspec URL).

    Files are written under a hidden partial name, checked (size, checksum) and renamed into place;
    the fetch ledger ($ETFUSE_HOME/fetch/ledger.sqlite) records each.  Credentials only from the
    environment, .env or ~/.netrc (docs/operations.md).  Exit 2 on missing or wrong credentials or
    settings, 1 when a provider failed.
    """
    s = cli_settings()
    first, last = _day(since, "--since"), _day(until, "--until")
    if first and last and first > last:
        raise typer.BadParameter("--since is after --until", param_hint="--since")
    if flow:
        from flows.fetch import fetch_flow
        report = fetch_flow(sources=sources, config=cli_config_path(), home=str(s.home), since=first, until=last,
                            dry_run=dry_run)
    else:
        report = _direct(s, sources, first, last, dry_run)
    print_report(report)
    kinds = [x.get("error_kind") for x in report["sources"] if x.get("error")]
    if kinds:
        raise typer.Exit(2 if all(k in _CONFIG_KINDS for k in kinds) else 1)
    if not report["sources"]:
        typer.echo("no source enabled: set fetch.<source>.enabled or name the sources (etfuse fetch gleam)")


def _direct(settings: Settings, sources, since, until, dry_run) -> dict:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from etfuse.fetch.run import run_fetch
    console = Console(stderr=True)
    columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn()]
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        def progress_for(item):
            job = bar.add_task(f"{item.source} {item.name}", total=item.size)

            def update(done: int, total: int | None) -> None:
                bar.update(job, completed=done, total=total)
            return update
        return run_fetch(settings, sources or None, since=since, until=until, dry_run=dry_run,
                         progress_for=progress_for).to_json()
