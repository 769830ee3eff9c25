"""``etfuse evaluate``: the evaluation protocol (blocked cross-validation, baselines, ablations,
final test) on the harmonised store, or what users get (the champion on the harmonised inputs, or
the written product) scored at stations and flux towers; writes one report (Markdown, JSON, PNG).
See docs/model-card.md."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from flows.common import cli_settings

if TYPE_CHECKING:                       # pandas is imported by the commands, not by `etfuse --help`
    import pandas as pd


def evaluate(
    champion: Annotated[bool, typer.Option("--champion", help="Score the registered champion on the harmonised "
                                                              "inputs at every station and tower instead of "
                                                              "running the cross-validation protocol.")] = False,
    product: Annotated[bool, typer.Option("--product", help="Score the written product (the values the API "
                                                            "serves, from whichever version wrote each day) at "
                                                            "every station and tower instead of running the "
                                                            "protocol.")] = False,
    variants: Annotated[str, typer.Option(help="GCN-GRU variants to cross-validate, comma-separated, 'none' or "
                                               "'all' (gcn_gru,no_graph,no_gru,without_gleam,without_era5land,"
                                               "without_modis; 'all' is the long ablation run).")] = "gcn_gru",
    start: Annotated[Optional[str], typer.Option(help="First day of data to use (default: all stored).")] = None,
    end: Annotated[Optional[str], typer.Option(help="Last day of data to use.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Report folder; default $ETFUSE_HOME/reports/"
                                                     "evaluation-<UTC time>.")] = None,
    title: Annotated[str, typer.Option(help="Title of the Markdown report.")] = "etfuse evaluation",
    truth: Annotated[Optional[Path], typer.Option(help="A synthetic world's truth/ folder: also score the final "
                                                       "models on the whole grid against it (RMSE map, skill away "
                                                       "from stations, seams).")] = None,
    truth_days: Annotated[int, typer.Option(help="Days of the final test period scored against the truth.")] = 14,
) -> None:
    """Run the evaluation protocol and write its report."""
    from etfuse.store import HarmonisedStore
    from training.protocol.variants import VARIANTS
    from training.samples import build_samples

    s = cli_settings()
    if champion and product:
        typer.echo("error: --champion and --product are two different reports; give one", err=True)
        raise typer.Exit(2)
    chosen = VARIANTS if variants == "all" else tuple(v for v in variants.split(",") if v and v != "none")
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        typer.echo(f"error: unknown variant(s) {unknown}; expected some of {list(VARIANTS)}, 'all' or 'none'", err=True)
        raise typer.Exit(2)
    folder = out or Path(s.home) / "reports" / f"evaluation-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    samples = build_samples(HarmonisedStore.of(s), s, start=start, end=end)
    if champion:
        _champion(samples, s, folder, title)
        return
    if product:
        _product(samples, s, folder, title)
        return
    from training.protocol.report import verdict, write_report
    from training.protocol.run import run_protocol
    from training.protocol.scores import markdown_table

    if truth is not None and not (truth / f"et_truth_{samples.days[-1].year}.nc").exists():
        typer.echo(f"error: {truth} holds no et_truth_<year>.nc of the stored period (expected a synthetic "
                   "world's truth/ folder)", err=True)
        raise typer.Exit(2)
    result = run_protocol(samples, s, variants=chosen, echo=typer.echo)
    if truth is not None:
        from training.protocol.truth import evaluate_truth
        result.truth = evaluate_truth(result, s, HarmonisedStore.of(s), truth, folder, n_days=truth_days).table
    paths = write_report(result, folder, s, title=title)
    typer.echo("\ncross-validation, out-of-fold, 95 % block-bootstrap intervals:")
    typer.echo(markdown_table(result.cv["overall"]))
    typer.echo(f"\n{verdict(result)}")
    typer.echo(f"report: {paths['markdown']}")


def _champion(samples, s, folder: Path, title: str) -> None:
    from training.protocol.champion import score_registered
    from training.registry import ModelRegistry

    registry = ModelRegistry(s)
    if registry.champion() is None:
        typer.echo("error: no champion is registered; train one first (etfuse train)", err=True)
        raise typer.Exit(2)
    path, version = registry.onnx_model_path("champion")
    info = registry.version(version)
    heldout = {x for x in info.tags.get("etfuse.data_window.heldout_stations", "").split(",") if x}
    trained = sorted(set(samples.stations["station_id"]) - heldout)
    frame, tables = score_registered(samples, s, path, trained)
    _station_report(frame, tables, "champion", folder, f"# {title}: champion v{version} at stations and towers",
                    "Scored on the harmonised inputs at every station-day; not a test of generalisation where the "
                    "champion trained on the station (see the per-group table).")


def _product(samples, s, folder: Path, title: str) -> None:
    """The product at each station's and tower's cell, read as the API reads it."""
    import pandas as pd

    from serving.product import ProductStore
    from training.protocol.champion import score_product

    store = ProductStore(s, reconcile=False)       # a reader: evaluating never repairs or moves product files
    first, last = samples.days[0], samples.days[-1]
    parts = []
    stations = samples.stations
    for k, row in enumerate(stations.itertuples(index=False), start=1):
        series = store.read_point(float(row.lat), float(row.lon), first, last)
        parts.append(series.assign(station_id=row.station_id))
        if k % 25 == 0 or k == len(stations):
            typer.echo(f"product read at {k}/{len(stations)} stations and towers")
    series = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["station_id", "date", "et_mm"])
    if series.empty:
        typer.echo(f"error: the product holds no day from {first:%Y-%m-%d} to {last:%Y-%m-%d} (product folder "
                   f"{store.root}); write product days first (etfuse update or backfill)", err=True)
        raise typer.Exit(2)
    versions = sorted(int(v) for v in series["model_version"].unique())
    trained = _training_stations(s, versions, samples)
    frame, tables = score_product(samples, s, series, trained)
    note = (f"The product as stored (days {series['date'].min():%Y-%m-%d}..{series['date'].max():%Y-%m-%d}, "
            f"written by model version(s) {', '.join(f'v{v}' for v in versions)}), read at the product cell "
            "holding each station; only station-days the product holds are scored. Not a test of "
            "generalisation at stations a version trained on (see the per-group table).")
    if trained is None:
        note += " The registry could not be read, so every station is counted as 'not training'."
    _station_report(frame, tables, "product", folder, f"# {title}: the product at stations and towers", note)


def _training_stations(s, versions: list[int], samples) -> list[str] | None:
    """Stations any of ``versions`` trained on (all stations but its held-out ones), or None when the
    registry cannot say."""
    try:
        from training.registry import ModelRegistry
        registry = ModelRegistry(s)
        heldout_by_version = [{x for x in registry.version(v).tags.get("etfuse.data_window.heldout_stations",
                                                                       "").split(",") if x} for v in versions]
    except Exception as exc:  # noqa: BLE001 - the scores stand without the training labels
        typer.echo(f"warning: the registry could not be read ({exc}); training status of stations unknown", err=True)
        return None
    everyone = set(samples.stations["station_id"])
    return sorted(set().union(*(everyone - held for held in heldout_by_version)))


def _station_report(frame: pd.DataFrame, tables: dict, name: str, folder: Path, heading: str, note: str) -> None:
    from training.protocol.scores import markdown_table

    folder.mkdir(parents=True, exist_ok=True)
    text = [heading, "", note, "", markdown_table(tables["overall"]), "", "## By target source and training status",
            "", markdown_table(tables["by_group"]), "", "## Per season", "", markdown_table(tables["season"]), ""]
    (folder / "report.md").write_text("\n".join(text))
    frame[["station_id", "date", "source", "obs", name, "gleam", "era5land"]].to_csv(
        folder / "station_days.csv", index=False)
    typer.echo("\n".join(text))
    typer.echo(f"report: {folder / 'report.md'}")
