"""Benchmark: the Zarr v3 copy of the product against the yearly NetCDF file, full province grid.

On a product built by bench/api_load.py (``--home``, kept with ``--keep``) or a fresh one, writes
every stored day into the year's Zarr store with :func:`serving.zarr_store.write_day` (the first
day also creates the store's metadata) and measures:

* write cost per day (region write + attribute update + consolidation), median and p90;
* a point's series over every stored day: Zarr (``xarray.open_zarr``, one cell) against the yearly
  NetCDF (netCDF4, an open file and a fresh open, as ``read_point`` does);
* a day's map (the whole grid) from both;
* the store's size against the yearly file's.

    .venv/bin/python bench/zarr_io.py --home /tmp/etfuse_bench_api_xxxx [--runs 15] [--no-append]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import netCDF4  # noqa: E402

from bench.api_load import YEAR, build_product  # noqa: E402
from bench.report import machine_facts, publish  # noqa: E402
from etfuse.settings import load_settings  # noqa: E402
from serving import zarr_store  # noqa: E402
from serving.product import ProductStore  # noqa: E402


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", help="a product home from bench/api_load.py --keep (else one is built)")
    parser.add_argument("--days", type=int, default=30, help="days to build when no --home is given")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="etfuse_bench_zarr_"))
    if not args.home:
        build_product(home, args.days)
    zarr_dir = Path(tempfile.mkdtemp(prefix="etfuse_bench_zarr_store_"))
    settings = load_settings(home=home, region="qinghai", distribution={"zarr_url": str(zarr_dir)})
    store = ProductStore(settings, reconcile=False)
    days = store.days()
    chunks = "x".join(map(str, settings.distribution.zarr_chunks))
    print(f"zarr bench: {len(days)} days on 850 x 1390 cells, chunks {chunks}, store {zarr_dir}", flush=True)

    writes, loads = [], []
    for day in days:
        t0 = time.perf_counter()
        ds = store.read_day(day)
        t1 = time.perf_counter()
        zarr_store.write_day(settings, store.grid, store.region_name, ds)
        t2 = time.perf_counter()
        loads.append(t1 - t0)
        writes.append(t2 - t1)
    create = writes[0]
    region = writes[1:]
    print(f"  region write per day: median {statistics.median(region):.3f} s, p90 {np.percentile(region, 90):.3f} s; "
          f"first day (creates the store) {create:.3f} s; reading the daily file {statistics.median(loads):.3f} s",
          flush=True)

    rng = np.random.default_rng(7)
    cells = [(int(rng.integers(850)), int(rng.integers(1390))) for _ in range(args.runs)]
    first, last = days[0], days[-1]
    zds = zarr_store.open_year(settings, YEAR)
    k0, k1 = (first.day_of_year - 1), (last.day_of_year - 1)
    z_point, n_point_open, n_point_fresh, z_map, n_map = [], [], [], [], []
    year_path = store.year_path(YEAR)
    handle = netCDF4.Dataset(year_path)
    for k, (r, c) in enumerate(cells):
        t0 = time.perf_counter()
        zs = zds["et"].isel(lat=r, lon=c, time=slice(k0, k1 + 1)).values
        z_point.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ns = np.ma.filled(handle["et"][:, r, c], np.nan)
        n_point_open.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with netCDF4.Dataset(year_path) as nc:
            nc["et"][:, r, c]
        n_point_fresh.append(time.perf_counter() - t0)
        np.testing.assert_allclose(zs, ns, atol=0.006, equal_nan=True)    # the same values
        d = (k * 7) % len(days)
        t0 = time.perf_counter()
        zds["et"].isel(time=days[d].day_of_year - 1).values
        z_map.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        handle["et"][d]
        n_map.append(time.perf_counter() - t0)
    handle.close()
    z_size, n_size = folder_size(Path(zarr_store.year_url(settings, YEAR))), year_path.stat().st_size
    med = statistics.median
    print(f"  point series ({len(days)} days): zarr {med(z_point) * 1000:.1f} ms, yearly NetCDF open "
          f"{med(n_point_open) * 1000:.1f} ms / fresh open {med(n_point_fresh) * 1000:.1f} ms; map: zarr "
          f"{med(z_map) * 1000:.0f} ms, NetCDF {med(n_map) * 1000:.0f} ms; size zarr {z_size / 1e6:.0f} MB, "
          f"NetCDF {n_size / 1e6:.0f} MB", flush=True)

    now = datetime.now(timezone.utc)
    lines = [f"\n## zarr_io: {now:%Y-%m-%d %H:%M} UTC\n",
             f"`bench/zarr_io.py`: the product's Zarr v3 store (serving/zarr_store.py, chunks {chunks}, zstd, "
             f"consolidated metadata, local disk) against the yearly NetCDF (chunks 4x64x64, zlib 4) on the full "
             f"province grid (850 x 1390), {len(days)} days of {YEAR}; medians over {args.runs} runs (random cells, "
             f"spread days).  Other helpers' work shared the 2 cores.\n",
             "| operation | Zarr | yearly NetCDF | notes |", "|---|---|---|---|",
             f"| write one day | {med(region):.3f} s (p90 {np.percentile(region, 90):.3f} s) | rebuild of the whole "
             f"year (build_year, see product_io) | Zarr: region write of the day's time index; first day of a year "
             f"(creates the store) {create:.3f} s; reading the daily file first {med(loads):.3f} s |",
             f"| point series, {len(days)} days | {med(z_point) * 1000:.1f} ms | {med(n_point_open) * 1000:.1f} ms "
             f"(open file), {med(n_point_fresh) * 1000:.1f} ms (fresh open) | Zarr through xarray.open_zarr (opened once) |",
             f"| map of one day | {med(z_map) * 1000:.0f} ms | {med(n_map) * 1000:.0f} ms | whole grid |",
             f"| size | {z_size / 1e6:.0f} MB | {n_size / 1e6:.0f} MB | Zarr holds all 365 days' chunks only where written |",
             "", f"Machine: {machine_facts('zarr', 'xarray', 'netCDF4', 'numcodecs')}.", ""]
    publish(lines, append=not args.no_append)
    shutil.rmtree(zarr_dir, ignore_errors=True)
    if not args.home:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
