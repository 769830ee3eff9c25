"""The ``etfuse`` command line: one entry point, thin commands over the core and the flows.

Exit codes: 0 success; 1 unexpected internal error; 2 bad usage or configuration; 3 an input file
was rejected (format, units, coverage); 4 the harmonised store refused an operation.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from etfuse.errors import EtfuseError, SourceFormatError, StoreError
from flows import cli_distribution, cli_evaluate, cli_fetch, cli_models, cli_ops
from flows.common import CLI_STATE, cli_config_path, cli_settings

#: Defaults for the process environment: telemetry off (this machine is offline), and a generous start-up
#: time for Prefect's ephemeral server, which can exceed its 20 s default on a loaded 2-core box.
RUNTIME_ENV = {"ORT_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}

app = typer.Typer(
    name="etfuse", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Daily evapotranspiration for Qinghai: read provider files, harmonise them, generate synthetic "
         "worlds, ingest and validate deliveries, train and register models, compute and serve the product.  "
         "Configuration: --config FILE or ETFUSE_CONFIG, overridden by ETFUSE_* environment variables (ETFUSE_HOME is the runtime root, default ./var).")

_state = CLI_STATE


@app.callback()
def _global(config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML settings file.")] = None,
            debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False) -> None:
    _state["config"] = config
    _state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


settings = cli_settings


def _parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        w, s, e, n = (float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected W,S,E,N in degrees (e.g. 100.5,35.5,102.5,37.5), got {text!r}")
    if not (w < e and s < n):
        raise typer.BadParameter(f"expected west < east and south < north, got {text!r}")
    return (w, s, e, n)


# ----------------------------------------------------------------------------- commands
@app.command()
def harmonise(
    files: Annotated[list[Path], typer.Argument(help="Provider files to read.", exists=True, dir_okay=False)],
    source: Annotated[str, typer.Option("--source", "-s", help="era5land | gleam | cma | stations | fluxnet | modis")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output: NetCDF for gridded sources, CSV for stations.")],
    bbox: Annotated[Optional[str], typer.Option(help="Clip to W,S,E,N [degrees] instead of the region plus margin.")] = None,
) -> None:
    """Read provider files and write the harmonised daily result, for inspection.

    Gridded sources give a NetCDF with the variables present among et [kg m-2], net_radiation
    [MJ m-2], skt and lst [K] on the source's native grid; station sources give a CSV with columns
    station_id,date,lat,lon,elevation_m,et_mm.
    """
    from etfuse.harmonise import harmonise_to_file
    result = harmonise_to_file(source, files, out, settings=settings(), bbox=_parse_bbox(bbox))
    typer.echo(result)


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write landing/, truth/ and manifest.json into.")],
    region: Annotated[str, typer.Option(help="Named region: test (2x2 deg around Xining) or qinghai.")] = "test",
    bbox: Annotated[Optional[str], typer.Option(help="W,S,E,N [degrees]; replaces the named region's bounds.")] = None,
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")] = "2021-01-01",
    end: Annotated[str, typer.Option(help="Last day, YYYY-MM-DD.")] = "2021-12-31",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same world.")] = 0,
    resolution: Annotated[Optional[float], typer.Option(help="Truth grid cell [degrees]; default the region's.")] = None,
    gleam_lag_days: Annotated[int, typer.Option(help="GLEAM files stop this many days before --end.")] = 0,
    profile: Annotated[str, typer.Option(help="fast (easy world for tests and the demo) or realistic "
                                              "(docs/synthetic-worlds.md).")] = "fast",
) -> None:
    """Generate a synthetic world in the providers' real file formats, plus its truth."""
    from rich.progress import Progress

    from etfuse.settings import named_regions
    from etfuse.synth.realistic import RealisticSpec, generate_realistic
    from etfuse.synth.world import WorldSpec, generate

    if profile not in ("fast", "realistic"):
        raise typer.BadParameter(f"unknown profile {profile!r}; expected fast or realistic", param_hint="--profile")
    regions = named_regions()
    if region not in regions:
        raise typer.BadParameter(f"unknown region {region!r}; expected one of {sorted(regions)}", param_hint="--region")
    r = regions[region]
    box = _parse_bbox(bbox) or (r["lon_min"], r["lat_min"], r["lon_max"], r["lat_max"])
    make_spec, run = (RealisticSpec, generate_realistic) if profile == "realistic" else (WorldSpec, generate)
    spec = make_spec(bbox=box, start=start, end=end, seed=seed, resolution_deg=resolution or r["resolution_deg"],
                     gleam_lag_days=gleam_lag_days)
    with Progress(transient=True) as progress:
        task = progress.add_task("generating days", total=None)
        manifest = run(out, spec, progress=lambda k, n: progress.update(task, completed=k, total=n))
    counts = ", ".join(f"{k}: {len(v)}" for k, v in manifest["files"].items())
    typer.echo(f"synthetic world {start}..{end} over {box} written to {out} ({counts}; "
               f"{len(manifest['stations'])} CMA stations)")


@app.command()
def demo(
    home: Annotated[Optional[Path], typer.Option(help="Runtime root; the demo works in <home>/demo (wiped first). "
                                                     "Default $ETFUSE_HOME or ./var.")] = None,
) -> None:
    """The whole operational story on embedded defaults (about 6-7 minutes on 2 cores).

    A synthetic world over the test region in the providers' formats; its archive ingested with a
    few bad files quarantined and alerted; v1 trained, registered and promoted; the update over a
    month; one more day delivered and the daily flow run; v2 trained and gated; a rollback; status.
    """
    from flows.demo import run_demo
    overrides = {"home": home} if home else {}
    run_demo(settings(region="test", **overrides), echo=typer.echo)


quarantine_app = typer.Typer(no_args_is_help=True, help="Files that failed reading or validation.")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(cli_models.app, name="models", help="Registered model versions: list, show, promote, rollback, history.")
app.add_typer(cli_distribution.app, name="distribution", help="STAC catalogue and Zarr stores: rebuild.")
app.command(name="watch")(cli_ops.watch)
app.command(name="fetch")(cli_fetch.fetch)
app.command("evaluate")(cli_evaluate.evaluate)


def _print_outcomes(report: dict) -> None:
    for o in report["outcomes"]:
        extra = o["reason"].get("error") if o.get("reason") and o["reason"].get("stage") == "read" else ""
        if o.get("reason") and o["reason"].get("stage") == "validation":
            extra = ", ".join(x["check"] for x in o["reason"]["outcomes"] if not x["success"])
        changes = " ".join(f"{k}:{v}" for k, v in o["changes"].items())
        typer.echo(f"  {o['status']:<12} {o['source']}/{o['file']}  {changes}  {extra}  {' '.join(o['alerts'])}".rstrip())
    for line in report.get("skipped", []):
        typer.echo(f"  skipped      {line}")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report["counts"].items())) or "nothing new"
    typer.echo(f"ingest: {counts}")


@app.command()
def ingest(
    direct: Annotated[bool, typer.Option("--direct", help="Run without Prefect (no flow run is recorded).")] = False,
) -> None:
    """Ingest every new file in landing/<source>/: validate, then accept or quarantine, and alert.

    Accepted files are archived under archive/<source>/<day>/, their days written to the
    harmonised store; refused files go to quarantine/<source>/ with <name>.reason.json.
    Running it again over the same files changes nothing.
    """
    s = settings()
    if direct:
        from etfuse.ingest import ingest_all
        report = ingest_all(s).to_json()
    else:
        from flows.ingest import ingest_flow
        report = ingest_flow(config=_config_path(), home=str(s.home))
    _print_outcomes(report)


@quarantine_app.command("list")
def quarantine_list() -> None:
    """Quarantined files: source, name, when, the stage that refused them and why."""
    from etfuse.quarantine import quarantined
    rows = quarantined(settings())
    if not rows:
        typer.echo("quarantine is empty")
        return
    for r in rows:
        typer.echo(f"{r['source']}/{r['file']}  {r['quarantined_at']}  {r['stage']}: {r['why']}"
                   + (f"  report: {r['report']}" if r["report"] else ""))


@quarantine_app.command("release")
def quarantine_release(
    file: Annotated[str, typer.Argument(help="Name of the quarantined file (as `quarantine list` shows it).")],
) -> None:
    """Move a quarantined file back to landing (after a fix) and ingest it again at once."""
    from etfuse.ingest import IngestContext, ingest_file, release
    s = settings()
    lf = release(s, file)
    ctx = IngestContext.create(s)
    outcome = ingest_file(lf, ctx)
    ctx.dispatcher.flush()
    _print_outcomes({"outcomes": [outcome.to_json()], "counts": {outcome.status: 1}})
    if outcome.status == "quarantined":
        raise typer.Exit(3)


@app.command()
def train(
    start: Annotated[Optional[str], typer.Option(help="First day of data to use (default: all stored).")] = None,
    end: Annotated[Optional[str], typer.Option(help="Last day of data to use.")] = None,
    no_register: Annotated[bool, typer.Option("--no-register", help="Train and evaluate only; log nothing to MLflow.")] = False,
) -> None:
    """Train a GCN-GRU on the harmonised store, evaluate it on held-out stations, export ONNX,
    register it in MLflow as `challenger` and promote it to `champion` if it passes the gate."""
    from etfuse.actor import default_actor
    from training.pipeline import format_table, run_training
    s = settings()
    registry = None
    if not no_register:
        from training.registry import ModelRegistry
        registry = ModelRegistry(s)
    outcome = run_training(s, registry=registry, actor=default_actor(), start=start, end=end, echo=typer.echo)
    typer.echo("\nheld-out stations, same station-days for every model:")
    typer.echo(format_table(outcome.table))
    if outcome.version is not None:
        typer.echo(f"\nregistered version {outcome.version}; gate: {outcome.decision.summary()}")


@app.command()
def update(
    date: Annotated[Optional[str], typer.Option("--date", help="Compute this one day (YYYY-MM-DD).")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="Compute stale days from this day on.")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="... up to this day (default: the last with inputs).")] = None,
    direct: Annotated[bool, typer.Option("--direct", help="Run without Prefect (no flow run is recorded).")] = False,
) -> None:
    """Compute every product day whose inputs are present and whose product is missing or stale.

    A day is stale when its input fingerprint changed (new, revised or late inputs: ERA5T replaced
    by final, GLEAM arriving) or the champion model changed.  Days run in date order with the
    champion from the registry; the yearly files of the touched years are rebuilt at the end.
    """
    import pandas as pd
    if date and (since or until):
        raise typer.BadParameter("give either --date or --since/--until", param_hint="--date")
    s = settings()
    start, end = (date, date) if date else (since, until)
    if direct:
        from rich.progress import Progress

        from serving.update import run_update
        from serving.wiring import ServingParts
        parts = ServingParts(s)
        with Progress(transient=True) as bar:
            job = bar.add_task("update", total=None)
            report = run_update(s, predictor=parts.predictor, product=parts.product,
                                start=pd.Timestamp(start) if start else None, end=pd.Timestamp(end) if end else None,
                                progress=lambda k, n, d: bar.update(job, completed=k, total=n,
                                                                    description=f"update {d:%Y-%m-%d}"))
        typer.echo(report.summary())
    else:
        from flows.update import update_flow
        result = update_flow(config=_config_path(), home=str(s.home),
                             since=pd.Timestamp(start).date() if start else None,
                             until=pd.Timestamp(end).date() if end else None)
        typer.echo(result["summary"])


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address (default serving.host).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default serving.port).")] = None,
) -> None:
    """Serve the product over HTTP: time series, area statistics, maps, the model; docs at /docs."""
    import uvicorn

    from serving.api import create_app
    from serving.wiring import ServingParts
    s = settings()
    if s.serving.api_workers > 1:      # each worker process builds its app from the same configuration
        if cli_config_path():
            os.environ["ETFUSE_CONFIG"] = cli_config_path()
        uvicorn.run("serving.api:app_from_environment", factory=True, workers=s.serving.api_workers,
                    host=host or s.serving.host, port=port or s.serving.port, log_level="info")
        return
    parts = ServingParts(s)
    app_ = create_app(s, registry=parts.registry, predictor=parts.predictor)
    uvicorn.run(app_, host=host or s.serving.host, port=port or s.serving.port, log_level="info")


@app.command()
def daily(
    direct: Annotated[bool, typer.Option("--direct", help="Run without Prefect.")] = False,
) -> None:
    """What an operator schedules: ingest everything new, then compute every stale product day."""
    s = settings()
    if direct:
        from etfuse.ingest import ingest_all
        from serving.wiring import ServingParts
        _print_outcomes(ingest_all(s).to_json())
        from flows.cli_ops import after_daily, today_first
        parts = ServingParts(s)
        today_first(s, parts.predictor, parts.product)
        after_daily(s)
        return
    from flows.daily import daily_flow
    result = daily_flow(config=_config_path(), home=str(s.home))
    _print_outcomes(result["ingest"])
    typer.echo(result["update"]["summary"])


@app.command()
def backfill(
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option(help="Last day, YYYY-MM-DD.")],
    workers: Annotated[int, typer.Option(help="Workers of the local Dask cluster.")] = 2,
    dask_address: Annotated[Optional[str], typer.Option(help="Use a running Dask scheduler (tcp://host:8786) instead.")] = None,
    chunk_days: Annotated[int, typer.Option(help="Days per task (each also recomputes the window's first days).")] = 30,
) -> None:
    """Recompute the stale product days of a date range in parallel on a Dask cluster.

    Each chunk of days runs in a Dask worker and writes its own days; the yearly files are rebuilt
    once at the end.  The result equals a sequential `etfuse update` of the same days.
    """
    import pandas as pd

    from flows.backfill import run_backfill
    s = settings()
    if workers < 1:
        raise typer.BadParameter("at least one worker", param_hint="--workers")
    result = run_backfill(config=_config_path(), home=str(s.home),
                          start=pd.Timestamp(start).date(), end=pd.Timestamp(end).date(), workers=workers,
                          address=dask_address, chunk_days=chunk_days)
    typer.echo(f"backfill {start}..{end} with model v{result['model_version']}: {result['days']} day(s) in "
               f"{result['chunks']} chunk(s); yearly files rebuilt: {result['years_rebuilt'] or 'none'}")


@app.command()
def status() -> None:
    """Where things stand: stored inputs, product days, provisional days, the champion, quarantine, recent alerts."""
    from flows.status import status_lines
    for line in status_lines(settings()):
        typer.echo(line)


@app.command()
def schedule(
    register_only: Annotated[bool, typer.Option("--register", help="Only register the deployments for the work pool "
                                                "(schedule.work_pool; a `prefect worker` runs them), then exit.")] = False,
    source: Annotated[Optional[Path], typer.Option(help="With --register: the folder holding the code (default: here).")] = None,
) -> None:
    """Run the scheduled flows: daily (ingest + update, schedule.daily_cron) and retrain (schedule.retrain_cron).

    Needs a Prefect server (prefect.api_url or PREFECT_API_URL).  Without --register this process
    registers the deployments and executes their runs until it is stopped; runs missed while it was
    down are picked up late, which is safe because every flow only does what is not done yet.
    """
    from flows.deployments import register, serve
    s = settings()
    config = _config_path()
    if register_only:
        ids = register(s, source=str((source or Path.cwd()).resolve()), config=config)
        typer.echo(f"registered {len(ids)} deployments for work pool {s.schedule.work_pool!r}: {', '.join(ids)}")
        return
    serve(s, config)


_config_path = cli_config_path


def main() -> None:
    for key, value in RUNTIME_ENV.items():
        os.environ.setdefault(key, value)
    try:
        app()
    except SystemExit:
        raise
    except SourceFormatError as exc:
        _fail(exc, 3)
    except StoreError as exc:
        _fail(exc, 4)
    except (EtfuseError, FileNotFoundError, ValueError) as exc:
        _fail(exc, 2)
    except Exception as exc:  # noqa: BLE001 - the last line of defence prints, --debug shows the traceback
        _fail(exc, 1)


def _fail(exc: BaseException, code: int) -> None:
    if _state["debug"]:
        raise exc
    typer.echo(f"error: {exc}", err=True)
    if code == 1:
        typer.echo("(an unexpected error; rerun with --debug for the traceback)", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
