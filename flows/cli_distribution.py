"""``etfuse distribution ...``: re-derive the STAC catalogue and the Zarr stores from the stored
product (after a failed publication, a changed setting, or to start a Zarr copy of an existing
product).  The NetCDF day files are the truth; both are rebuilt from them.  See docs/product.md."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="The product's STAC catalogue and Zarr stores: rebuild them from the stored days.")


@app.command()
def rebuild(
    stac: Annotated[bool, typer.Option("--stac/--no-stac", help="Rewrite the STAC catalogue.")] = True,
    zarr: Annotated[bool, typer.Option("--zarr/--no-zarr", help="Region-write every day into the Zarr stores "
                                                                "(default: when distribution.zarr is on).")] = None,
) -> None:
    """Rewrite the STAC catalogue and (optionally) every day's Zarr region from the product files."""
    from rich.progress import track

    from flows.common import cli_settings
    from serving import stac as stac_catalogue
    from serving import zarr_store
    from serving.product import ProductStore

    settings = cli_settings()
    store = ProductStore(settings)
    if stac:
        n = stac_catalogue.rebuild(settings, store)
        typer.echo(f"STAC: {n} items and the collection under {stac_catalogue.stac_root(settings)}")
    if zarr if zarr is not None else settings.distribution.zarr:
        days = store.days()
        for day in track(days, description="Zarr region writes"):
            day_ds = store.read_day(day)
            if day_ds is not None:
                zarr_store.write_day(settings, store.grid, store.region_name, day_ds, store.metadata)
        typer.echo(f"Zarr: {len(days)} days written under {zarr_store.zarr_root(settings)}")
