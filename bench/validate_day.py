"""Benchmark: validating one full-province day of ERA5-Land, GLEAM and MODIS (etfuse.quality).

Builds reader-shaped datasets (what ``etfuse.sources.read_source`` returns) at the providers'
native resolutions over the Qinghai region plus its 0.5 deg margin: ERA5-Land 0.1 deg (centres
on multiples of 0.1), GLEAM 0.25 deg (edges on multiples of 0.25), MODIS on the 0.01 deg target
lattice with about 35 % cloud gaps.  Each is validated ``--runs`` times after one warm-up call (the
first call pays the Great Expectations import and context); consistency checks see the other
sources' datasets and drift checks see reference statistics computed from the same data, so every
suite runs in full, HTML reports included.  Prints per-source and total median seconds and peak
RSS, and appends a dated section to bench/results.md.

    .venv/bin/python bench/validate_day.py [--runs 7] [--no-append]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import append_results, machine_facts  # noqa: E402
from etfuse.cf import annotate  # noqa: E402
from etfuse.settings import Settings, load_settings  # noqa: E402

DAY = pd.Timestamp("2021-07-15")


def _axis_centred(low: float, high: float, res: float, on_multiples: bool) -> np.ndarray:
    """Cell centres of a provider lattice covering [low, high] (ascending)."""
    if on_multiples:                                   # ERA5-Land: centres at k * res
        return np.round(np.arange(np.floor(low / res), np.ceil(high / res) + 1) * res, 6)
    start = np.floor(low / res) * res + res / 2        # GLEAM: edges at k * res
    return np.round(np.arange(start, high + res / 2, res), 6)


def _grid(settings: Settings, res: float, on_multiples: bool) -> tuple[np.ndarray, np.ndarray]:
    r = settings.region
    m = r.margin_deg
    lat = _axis_centred(r.lat_min - m, r.lat_max + m, res, on_multiples)[::-1]
    lon = _axis_centred(r.lon_min - m, r.lon_max + m, res, on_multiples)
    return lat, lon


def _smooth(rng: np.random.Generator, shape: tuple[int, int], mean: float, sd: float) -> np.ndarray:
    """A cheap smooth field: coarse noise repeated up to ``shape``."""
    coarse = rng.standard_normal((shape[0] // 10 + 2, shape[1] // 10 + 2))
    field = np.kron(coarse, np.ones((10, 10)))[: shape[0], : shape[1]]
    return (mean + sd * field).astype(np.float32)


def build_datasets(settings: Settings, seed: int = 0) -> dict[str, xr.Dataset]:
    rng = np.random.default_rng(seed)
    time_ = pd.DatetimeIndex([DAY])
    out = {}
    lat, lon = _grid(settings, 0.1, True)
    shape = (1, lat.size, lon.size)
    era5 = xr.Dataset(
        {"et": (("time", "lat", "lon"), np.clip(_smooth(rng, shape[1:], 2.5, 1.0), -0.2, None)[None]),
         "net_radiation": (("time", "lat", "lon"), _smooth(rng, shape[1:], 11.0, 3.0)[None]),
         "skt": (("time", "lat", "lon"), _smooth(rng, shape[1:], 288.0, 6.0)[None])},
        coords={"time": time_, "lat": lat, "lon": lon, "era5_stream": ("time", ["final"]),
                "has_et": ("time", [True]), "has_net_radiation": ("time", [True]), "has_skt": ("time", [True])})
    out["era5land"] = annotate(era5, source="era5land", source_files="era5land_202107.nc")
    lat, lon = _grid(settings, 0.25, False)
    et = np.clip(_smooth(rng, (lat.size, lon.size), 3.0, 1.2), 0, None)[None]
    gleam = xr.Dataset({"et": (("time", "lat", "lon"), et)}, coords={"time": time_, "lat": lat, "lon": lon})
    out["gleam"] = annotate(gleam, source="gleam", source_files="E_2021_GLEAM_v3.7a.nc")
    r, m, res = settings.region, settings.region.margin_deg, 0.01
    n_lat = int(round((r.lat_max - r.lat_min + 2 * m) / res))
    n_lon = int(round((r.lon_max - r.lon_min + 2 * m) / res))
    lat = r.lat_max + m - (np.arange(n_lat) + 0.5) * res
    lon = r.lon_min - m + (np.arange(n_lon) + 0.5) * res
    lst = _smooth(rng, (n_lat, n_lon), 300.0, 7.0) + rng.normal(0, 1, (n_lat, n_lon)).astype(np.float32)
    cloud = _smooth(rng, (n_lat, n_lon), 0.0, 1.0) > 0.39            # about 35 % of the cells
    lst[cloud] = np.nan
    modis = xr.Dataset({"lst": (("time", "lat", "lon"), lst[None])},
                       coords={"time": time_, "lat": lat, "lon": lon})
    out["modis"] = annotate(modis, source="modis", source_files=f"MOD11A1.A{DAY:%Y%j}.etfuse.061.tif")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-append", action="store_true", help="do not append to bench/results.md")
    args = parser.parse_args(argv)

    from etfuse.quality import ValidationContext, validate
    from etfuse.quality.drift import compute_reference_stats
    from etfuse.quality.frames import region_cells

    with tempfile.TemporaryDirectory(prefix="etfuse-bench-validate-") as home:
        settings = load_settings(home=Path(home), region="qinghai")
        datasets = build_datasets(settings)
        sizes = {}
        for name, ds in datasets.items():
            rows, cols = region_cells(ds, settings.region)
            sizes[name] = (f"{ds.sizes['lat']} x {ds.sizes['lon']} with margin, "
                           f"{rows.size * cols.size:,} region cells")
        stats = compute_reference_stats(datasets, settings=settings)
        context = ValidationContext(today=date(2021, 8, 1), reference_stats=stats,
                                    other_source_day=lambda src, day: datasets.get(src))
        started = time.perf_counter()
        cold = {}
        for name, ds in datasets.items():
            t0 = time.perf_counter()
            result = validate(name, ds, settings=settings, file=None, context=context)
            cold[name] = time.perf_counter() - t0
            failed = [o.check for o in result.outcomes if not o.success and o.severity != "info"]
            print(f"{name}: {len(result.outcomes)} checks, accepted={result.accepted}, failed={failed}")
        cold_total = time.perf_counter() - started
        times: dict[str, list[float]] = {name: [] for name in datasets}
        totals = []
        for _ in range(args.runs):
            total = 0.0
            for name, ds in datasets.items():
                t0 = time.perf_counter()
                validate(name, ds, settings=settings, file=None, context=context)
                elapsed = time.perf_counter() - t0
                times[name].append(elapsed)
                total += elapsed
            totals.append(total)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    medians = {name: statistics.median(v) for name, v in times.items()}
    total_median = statistics.median(totals)
    machine = machine_facts("great-expectations", "pandas", "numpy")
    print(f"\nfull-province day, median of {args.runs} runs (first call excluded):")
    for name in datasets:
        print(f"  {name:9s} {medians[name]:.3f} s  (min {min(times[name]):.3f}, max {max(times[name]):.3f}; "
              f"first call {cold[name]:.2f} s)  [{sizes[name]}]")
    print(f"  total     {total_median:.3f} s  (first round incl. GE import and context: {cold_total:.2f} s)")
    print(f"  peak RSS  {peak_mib:.0f} MiB")
    print(f"  {machine}")

    if not args.no_append:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        lines = [f"\n## validate_day: {stamp}\n",
                 f"`bench/validate_day.py --runs {args.runs}`: one full-province day ({DAY:%Y-%m-%d}) per source, "
                 "reader-shaped datasets at native resolution (region qinghai + 0.5 deg margin), every suite "
                 "incl. consistency, drift and the HTML report. Median of the runs after one warm-up call.\n",
                 "| source | grid | median [s] | min [s] | max [s] | first call [s] |",
                 "|---|---|---|---|---|---|"]
        for name in datasets:
            lines.append(f"| {name} | {sizes[name]} | {medians[name]:.3f} | {min(times[name]):.3f} | "
                         f"{max(times[name]):.3f} | {cold[name]:.2f} |")
        lines.append(f"| **total** | | **{total_median:.3f}** | {min(totals):.3f} | {max(totals):.3f} | {cold_total:.2f} |")
        lines.append(f"\nPeak RSS {peak_mib:.0f} MiB. Machine: {machine}.\n")
        append_results(lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
