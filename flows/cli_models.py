"""``etfuse models ...``: the GCN-GRU registry from the command line (list, show, promote, rollback,
history).  See docs/registry.md.

Only typer and the standard library are imported here: MLflow and training.registry are imported
inside the commands, so ``etfuse --help`` stays fast.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Optional

import typer

app = typer.Typer(
    no_args_is_help=True, add_completion=False,
    help="The model registry: versions, the champion/challenger aliases, promotion, rollback and the champion's "
         "history.  MLflow is found at MLFLOW_TRACKING_URI, else mlflow.tracking_uri, else the embedded "
         "sqlite:///$ETFUSE_HOME/mlflow/mlflow.db.")

_BY = typer.Option("--by", help="Who makes the change, recorded in the history; default $USER@hostname.")


def _registry():
    from flows.common import cli_settings as settings
    from training.registry import ModelRegistry

    return ModelRegistry(settings())


def _when(value: datetime | None, none: str = "-") -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value is not None else none


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _float(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None


def _one_line(text: str, limit: int | None = None) -> str:
    flat = " ".join(text.split())
    return flat if limit is None or len(flat) <= limit else flat[: limit - 3] + "..."


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain aligned text table (the last column is not padded)."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    dashes = ["-" * w for w in widths]
    dashes[-1] = "-" * max(len(headers[-1]), min(widths[-1], 40))  # the last column may run long
    return "\n".join([line(headers), line(dashes), *(line(r) for r in rows)])


def _actor(by: str | None) -> str:
    from etfuse.actor import default_actor

    return by or default_actor()


# ----------------------------------------------------------------------------- commands
@app.command("list")
def list_versions() -> None:
    """Every registered version with its aliases, status, held-out RMSE and gate decision."""
    from training.registry import mask_uri

    registry = _registry()
    infos = registry.versions()
    rows = []
    for i in infos:
        window = f"{i.tags.get('etfuse.data_window.start', '?')}..{i.tags.get('etfuse.data_window.end', '?')}"
        rows.append([str(i.version), ",".join(i.aliases) or "-", i.status, _num(i.metrics.get("heldout_rmse")),
                     i.gate_decision or "-", _when(i.created_at), window, i.tags.get("etfuse.code_version", "-"),
                     (i.run_id or "-")[:12]])
    champion = next((i.version for i in infos if "champion" in i.aliases), None)
    typer.echo(f"registered model {registry.name!r} at {mask_uri(registry.tracking_uri)}; champion: "
               + (f"version {champion}" if champion is not None else "none"))
    typer.echo(table(["VERSION", "ALIASES", "STATUS", "HELDOUT_RMSE", "GATE", "CREATED (UTC)", "DATA", "CODE", "RUN"],
                     rows))


@app.command()
def show(version: Annotated[int, typer.Argument(help="Version number.")]) -> None:
    """One version: where it came from, its metrics, the gate's decision and its champion periods."""
    registry = _registry()
    info = registry.version(version)
    tags = info.tags
    lines = [
        f"version:      {info.version} of {info.name!r}",
        f"status:       {info.status}" + (f" (aliases: {', '.join(info.aliases)})" if info.aliases else ""),
        f"created:      {_when(info.created_at)}",
        f"run:          {info.run_id or '-'}",
        f"model:        {info.model_uri}  (source {info.source})",
        f"description:  {info.description or '-'}",
        f"code:         {tags.get('etfuse.code_version', '-')}",
        f"data window:  {tags.get('etfuse.data_window.start', '?')} .. {tags.get('etfuse.data_window.end', '?')}"
        f" (train until {tags.get('etfuse.data_window.train_end', '?')})",
        f"held-out:     {tags.get('etfuse.heldout_station_days', '?')} station-days, "
        f"sha256 {tags.get('etfuse.heldout_sha256', '-')}",
    ]
    fingerprints = sorted((k.split(".", 2)[2], v) for k, v in tags.items() if k.startswith("etfuse.fingerprint."))
    if fingerprints:
        lines.append("inputs:       " + "; ".join(f"{k} {v[:16]}" for k, v in fingerprints))
    typer.echo("\n".join(lines))
    if info.metrics:
        typer.echo("\nmetrics (held-out evaluation):")
        typer.echo(table(["METRIC", "VALUE"], [[k, f"{v:.4g}"] for k, v in sorted(info.metrics.items())]))
    if info.gate_decision:
        g = lambda key: tags.get(f"etfuse.gate.{key}", "-")  # noqa: E731
        f = lambda key: _num(_float(g(key)))  # noqa: E731
        champ = ("no champion" if g("champion_version") in ("none", "-")
                 else f"champion v{g('champion_version')} {f('champion_rmse')}")
        typer.echo(f"\ngate: {g('decision')} at {_when(_time(g('at')), g('at'))} by {g('by')}")
        typer.echo(f"  RMSE [mm/d]: candidate {f('candidate_rmse')}, {champ} (margin {f('margin_mm')}), "
                   f"raw GLEAM {f('gleam_rmse')}, raw ERA5-Land {f('era5land_rmse')}")
        for reason in g("reasons").splitlines():
            typer.echo(f"  - {reason}")
    if info.rolled_back:
        rb = lambda key: tags.get(f"etfuse.rolled_back.{key}", "?")  # noqa: E731
        typer.echo(f"\nrolled back at {_when(_time(rb('at')), rb('at'))} by {rb('by')} (to version {rb('to')}): "
                   f"{rb('reason')}")
    periods = [h for h in registry.history() if h.version == info.version]
    if periods:
        typer.echo("\nchampion periods:")
        typer.echo(table(["FROM", "UNTIL", "ACTION", "BY", "REASON"],
                         [[_when(h.start), _when(h.end, "now" if h.current else "-"), h.action, h.set_by,
                           _one_line(h.reason, 100)] for h in periods]))


@app.command()
def promote(
    version: Annotated[int, typer.Argument(help="Version to make champion.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why, recorded in the history.")] = "manual promotion",
    by: Annotated[Optional[str], _BY] = None,
) -> None:
    """Make VERSION the champion by hand (bypasses the gate); serving uses it from the next request."""
    registry = _registry()
    info = registry.version(version)
    before = registry.alias_version("champion")
    registry.promote(version, actor=_actor(by), reason=reason)
    typer.echo(f"champion of {registry.name!r} is now version {version} (was "
               f"{before if before is not None else 'none'}); serving uses it from the next request")
    if info.gate_decision == "rejected":
        first = info.tags.get("etfuse.gate.reasons", "").splitlines()[:1]
        typer.echo(f"note: the gate had rejected version {version}" + (f": {first[0]}" if first else ""))


@app.command()
def rollback(
    to: Annotated[Optional[int], typer.Option("--to", help="Version to go back to; default: the champion before "
                                                           "the current one (skipping rolled-back versions).")] = None,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why, recorded in the history.")] = "manual rollback",
    by: Annotated[Optional[str], _BY] = None,
    recompute: Annotated[bool, typer.Option("--recompute/--no-recompute",
                                            help="Also recompute the product days the rolled-back version wrote "
                                                 "(the rollback flow).")] = False,
) -> None:
    """Move the champion back; the version rolled back from is marked, and serving switches at the next request.

    With --recompute this runs the rollback flow: the product days written by the rolled-back
    version are computed again with the restored champion.
    """
    if recompute:
        from flows.common import cli_config_path as _config_path, cli_settings as settings
        from flows.rollback import rollback_flow
        result = rollback_flow(config=_config_path(), home=str(settings().home),
                               to=to, reason=reason, actor=_actor(by))
        typer.echo(f"rolled back: champion is now version {result['to']} (was {result['from']}); "
                   f"{result.get('summary', 'no product day to recompute')}")
        return
    registry = _registry()
    before = registry.alias_version("champion")
    target = registry.rollback(to=to, actor=_actor(by), reason=reason)
    typer.echo(f"rolled back {registry.name!r}: champion is now version {target} (was {before}); "
               "serving uses it from the next request; `etfuse update` (or --recompute) recomputes the days "
               f"version {before} wrote")


@app.command()
def history() -> None:
    """Which version was champion over which period, who or what changed it, and why."""
    registry = _registry()
    entries = registry.history()
    if not entries:
        typer.echo(f"registered model {registry.name!r} has had no champion yet")
        return
    rows = [[str(h.version), _when(h.start), _when(h.end, "now" if h.current else "-"), h.action, h.set_by,
             _one_line(h.reason)] for h in entries]
    typer.echo(table(["VERSION", "FROM (UTC)", "UNTIL (UTC)", "ACTION", "BY", "REASON"], rows))
    if not entries[-1].current:
        live = registry.alias_version("champion")
        typer.echo(f"note: the champion alias now points at {live if live is not None else 'nothing'}, set outside "
                   "etfuse (no history record)")
