"""Benchmark: the product store on the full province grid (850 x 1390 cells at 0.01 deg).

Writes a year of daily product files with realistic ET (the synthetic world's truth ET over the
province, one field per ``--field-step`` days, plus a per-day texture of ``--texture-sd`` mm that
stands for the model's fine-scale structure), then measures:

* ``write_day``: new days (every day of the year), unchanged days, replaced days; quicklooks
  (drawn on their own, after a warm-up);
* reads: ``read_point`` for a year from daily files only (no yearly file yet) and from the
  yearly file, ``read_area`` (1 x 1 deg), ``read_field`` and ``read_day`` (xarray) of one day;
* ``build_year`` of the whole year, and the sizes of daily and yearly files;
* with ``--compare-chunks``: other yearly chunk shapes (size, map read, point-year read).

Prints medians and appends a dated section to bench/results.md (``--no-append`` to skip).

    .venv/bin/python bench/product_io.py [--days 365] [--runs 7] [--compare-chunks 16x64x64,4x170x278]
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import netCDF4  # noqa: E402

from bench.report import append_results, machine_facts  # noqa: E402
from etfuse.settings import Settings, load_settings  # noqa: E402
from etfuse.synth.world import World, WorldSpec  # noqa: E402
from serving import product  # noqa: E402
from serving.product import ProductStore  # noqa: E402

YEAR = 2021


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def median(values) -> float:
    return float(statistics.median(values))


class Fields:
    """Truth ET from the synthetic world every ``step`` days, plus a per-day texture."""

    def __init__(self, settings: Settings, days: pd.DatetimeIndex, step: int, texture_sd: float, seed: int = 3) -> None:
        r = settings.region
        world = World(WorldSpec(bbox=r.bbox, start=str(days[0].date()), end=str(days[-1].date()), seed=seed,
                                margin_deg=0.0))
        self.base: dict[int, np.ndarray] = {}
        for k in range(0, len(days), step):
            self.base[k] = world._day(days[k])["et"].astype(np.float32)
        self.keys = sorted(self.base)
        self.texture_sd = texture_sd
        self.rng = np.random.default_rng(seed)

    def __call__(self, k: int) -> np.ndarray:
        base = self.base[max(key for key in self.keys if key <= k)]
        if self.texture_sd <= 0:
            return base
        noise = self.rng.normal(0.0, self.texture_sd, base.shape).astype(np.float32)
        return np.clip(base + noise, 0.0, None)


def _machine() -> str:
    return machine_facts("netCDF4", "xarray", "numpy", "matplotlib",
                         extra=f"netCDF-C {netCDF4.__netcdf4libversion__}, HDF5 {netCDF4.__hdf5libversion__}")


def point_cells(store: ProductStore, n: int, seed: int = 5) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    lat, lon = store.grid.lat, store.grid.lon
    return [(float(lat[rng.integers(lat.size)]), float(lon[rng.integers(lon.size)])) for _ in range(n)]


def compare_yearly_chunks(store: ProductStore, shapes: list[tuple[int, int, int]], runs: int) -> list[dict]:
    rows = []
    original = product.YEARLY_CHUNKS
    points = point_cells(store, runs, seed=11)
    try:
        for shape in shapes:
            product.YEARLY_CHUNKS = shape
            seconds, path = timed(store.build_year, YEAR)
            size = path.stat().st_size
            n_days = len(store.days())
            maps, series = [], []
            for k in range(runs):
                with netCDF4.Dataset(path) as nc:
                    t, _ = timed(lambda: nc["et"][(37 * k) % n_days])
                maps.append(t)
                lat, lon = points[k]
                r, c = store.grid.cell_of(lat, lon)
                with netCDF4.Dataset(path) as nc:
                    t, _ = timed(lambda: nc["et"][:, int(r), int(c)])
                series.append(t)
            rows.append({"chunks": "x".join(map(str, shape)), "build_s": seconds, "mb_per_day": size / n_days / 1e6,
                         "map_s": median(maps), "point_year_s": median(series)})
            print(f"  yearly chunks {shape}: build {seconds:.1f} s, {size / n_days / 1e6:.2f} MB/day, "
                  f"map {median(maps):.3f} s, point-year {median(series):.3f} s", flush=True)
    finally:
        product.YEARLY_CHUNKS = original
    store.build_year(YEAR)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--field-step", type=int, default=8, help="days between distinct truth fields")
    parser.add_argument("--texture-sd", type=float, default=0.03, help="per-day fine-scale texture [mm]")
    parser.add_argument("--compare-chunks", default="", help="extra yearly chunk shapes, e.g. 16x64x64,4x170x278")
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary product folder")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="etfuse_bench_product_"))
    settings = load_settings(home=home, region="qinghai", serving={"quicklooks": False})
    days = pd.date_range(f"{YEAR}-01-01", periods=args.days, freq="D")
    print(f"product store bench in {home}: grid 850 x 1390, {len(days)} days", flush=True)
    t_fields, fields = timed(Fields, settings, days, args.field_step, args.texture_sd)
    print(f"  {len(fields.keys)} truth fields in {t_fields:.1f} s", flush=True)
    store = ProductStore(settings)
    sources = {"era5land", "gleam", "modis"}

    # -- write_day: every day of the year (new) ------------------------------------------------
    new_times = []
    for k, day in enumerate(days):
        values = fields(k)
        t, action = timed(store.write_day, day, values, model_version=1, status="final", sources_used=sources,
                          fingerprint=fingerprint(f"{day}"))
        assert action == "written"
        new_times.append(t)
    sizes = [store.day_path(d).stat().st_size for d in days]
    print(f"  write_day (new): median {median(new_times):.3f} s, p90 {np.percentile(new_times, 90):.3f} s, "
          f"max {max(new_times):.3f} s; daily file {np.mean(sizes) / 1e6:.2f} MB", flush=True)

    sample = [days[(k * 53) % len(days)] for k in range(args.runs)]
    unchanged = [timed(store.write_day, d, fields(0), model_version=1, status="final", sources_used=sources,
                       fingerprint=fingerprint(f"{d}"))[0] for d in sample]
    replaced = []
    for d in sample:
        t, action = timed(store.write_day, d, fields(int((d - days[0]).days)), model_version=2, status="final",
                          sources_used=sources, fingerprint=fingerprint(f"{d}-v2"))
        assert action == "replaced"
        replaced.append(t)
    print(f"  write_day unchanged {median(unchanged) * 1000:.1f} ms, replaced {median(replaced):.3f} s", flush=True)

    # -- quicklooks ---------------------------------------------------------------------------
    store.quicklook(days[0])                                  # warm-up: matplotlib import and fonts
    ql_times = []
    for d in sample:
        store.quicklook_path(d).unlink(missing_ok=True)
        ql_times.append(timed(store.quicklook, d)[0])
    ql_sizes = [store.quicklook_path(d).stat().st_size for d in sample]
    cached = median([timed(store.quicklook, d)[0] for d in sample])
    print(f"  quicklook {median(ql_times):.3f} s ({np.mean(ql_sizes) / 1e3:.0f} kB), up-to-date check "
          f"{cached * 1000:.1f} ms", flush=True)

    # -- reads from daily files only -----------------------------------------------------------
    points = point_cells(store, args.runs)
    point_daily = [timed(store.read_point, lat, lon, days[0], days[-1])[0] for lat, lon in points]
    bbox = (100.0, 35.0, 101.0, 36.0)
    area = [timed(store.read_area, bbox, d)[0] for d in sample]
    field_read = [timed(store.read_field, d)[0] for d in sample]
    day_read = [timed(store.read_day, d)[0] for d in sample]
    print(f"  read_point year (daily files) {median(point_daily):.3f} s; read_area 1x1 deg "
          f"{median(area) * 1000:.1f} ms; read_field {median(field_read):.3f} s; read_day (xarray) "
          f"{median(day_read):.3f} s", flush=True)

    # -- yearly file --------------------------------------------------------------------------
    build_s, year_path = timed(store.build_year, YEAR)
    year_size = year_path.stat().st_size
    first_point = timed(store.read_point, *points[0], days[0], days[-1])
    point_yearly = [timed(store.read_point, lat, lon, days[0], days[-1])[0] for lat, lon in points]
    assert first_point[1].attrs["days_from_yearly"] == len(days)
    yearly_map = []
    for k in range(args.runs):
        with netCDF4.Dataset(year_path) as nc:
            yearly_map.append(timed(lambda: nc["et"][(37 * k) % len(days)])[0])
    stale_s, _ = timed(store.stale_years)
    print(f"  build_year {build_s:.1f} s ({len(days)} days, {year_size / len(days) / 1e6:.2f} MB/day); read_point "
          f"year (yearly file) first {first_point[0]:.3f} s, median {median(point_yearly):.3f} s; map of a day "
          f"from the yearly file {median(yearly_map):.3f} s; stale_years {stale_s * 1000:.0f} ms", flush=True)

    compare = []
    if args.compare_chunks:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.compare_chunks.split(",") if s]
        compare = compare_yearly_chunks(store, [product.YEARLY_CHUNKS, *shapes], args.runs)

    t_reopen, reopened = timed(ProductStore, settings)
    assert reopened.last_reconcile.clean
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  reopen + reconcile {t_reopen:.2f} s; peak RSS {peak_mib:.0f} MiB", flush=True)

    if not args.no_append:
        now = datetime.now(timezone.utc)
        lines = [
            f"\n## product_io: {now:%Y-%m-%d %H:%M} UTC\n",
            f"`bench/product_io.py --days {args.days} --runs {args.runs} --field-step {args.field_step} "
            f"--texture-sd {args.texture_sd}{' --compare-chunks ' + args.compare_chunks if args.compare_chunks else ''}`: "
            f"the product store on the full province grid (850 x 1390 cells), {len(days)} days of {YEAR}; ET = the "
            f"synthetic world's truth (one field per {args.field_step} days, 0-{max(float(np.nanmax(b)) for b in fields.base.values()):.1f} mm) "
            f"plus {args.texture_sd} mm per-day texture; zlib {settings.serving.compression_level}, "
            f"least_significant_digit {settings.serving.least_significant_digit}; daily chunks "
            f"{'x'.join(map(str, product.DAILY_CHUNKS))}, yearly {'x'.join(map(str, product.YEARLY_CHUNKS))}. "
            f"Medians over {args.runs} runs unless stated.\n",
            "| operation | median | notes |",
            "|---|---|---|",
            f"| write_day, new day | {median(new_times):.3f} s | all {len(days)} days: p90 {np.percentile(new_times, 90):.3f} s, max {max(new_times):.3f} s; quicklook not included |",
            f"| write_day, unchanged | {median(unchanged) * 1000:.1f} ms | reads the stored file's provenance |",
            f"| write_day, replaced | {median(replaced):.3f} s | |",
            f"| quicklook PNG | {median(ql_times):.3f} s | {np.mean(ql_sizes) / 1e3:.0f} kB; up-to-date check {cached * 1000:.1f} ms |",
            f"| daily file size | {np.mean(sizes) / 1e6:.2f} MB | mean over the year |",
            f"| read_point, a year from daily files | {median(point_daily):.3f} s | before build_year |",
            f"| build_year | {build_s:.1f} s | once, {len(days)} days |",
            f"| yearly file size | {year_size / len(days) / 1e6:.2f} MB/day | {year_size / 1e6:.0f} MB |",
            f"| read_point, a year from the yearly file | {median(point_yearly):.3f} s | first call (reads provenance) {first_point[0]:.3f} s |",
            f"| map of one day from the yearly file | {median(yearly_map):.3f} s | netCDF4, whole grid |",
            f"| read_field (daily file) | {median(field_read):.3f} s | |",
            f"| read_day (xarray, loaded) | {median(day_read):.3f} s | |",
            f"| read_area 1 x 1 deg | {median(area) * 1000:.1f} ms | 100 x 100 cells |",
            f"| reopen + reconcile | {t_reopen:.2f} s | {len(days)} daily files, stat only |",
        ]
        if compare:
            lines += ["", "Yearly chunk shapes (same daily files):", "",
                      "| chunks | build_year [s] | MB/day | map of a day [s] | point, a year [s] |",
                      "|---|---|---|---|---|"]
            lines += [f"| {r['chunks']} | {r['build_s']:.1f} | {r['mb_per_day']:.2f} | {r['map_s']:.3f} | "
                      f"{r['point_year_s']:.3f} |" for r in compare]
        lines += ["", f"Peak RSS {peak_mib:.0f} MiB. Machine: {_machine()}.", ""]
        append_results(lines)
    if args.keep:
        print(f"kept {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
