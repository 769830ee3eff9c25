"""The benchmark scripts still run and report what they name (smallest sizes, nothing appended to
bench/results.md).  Their recorded figures come from full runs by hand (bench/README.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def run_bench(script: str, *args: str, timeout: float = 600) -> str:
    before = (REPO / "bench" / "results.md").read_bytes()
    result = subprocess.run([sys.executable, str(REPO / "bench" / script), *args, "--no-append"], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (REPO / "bench" / "results.md").read_bytes() == before, "--no-append appended"
    return result.stdout


def seconds(text: str, pattern: str) -> float:
    match = re.search(pattern, text)
    assert match, f"no {pattern!r} in:\n{text[-2000:]}"
    value = float(match.group(1))
    assert value > 0
    return value


def test_validate_day_times_each_source():
    out = run_bench("validate_day.py", "--runs", "1")
    for source in ("era5land", "gleam", "modis"):
        seconds(out, rf"{source}\s+([\d.]+) s")
    assert "1,181,500 region cells" in out                      # the full province at 0.01 deg
    assert "great-expectations" in out


def test_product_io_times_writes_and_reads():
    out = run_bench("product_io.py", "--days", "3", "--runs", "1")
    seconds(out, r"build_year ([\d.]+) s \(3 days")
    seconds(out, r"read_area 1x1 deg ([\d.]+) ms")


def test_predict_day_steady_and_cold_on_the_full_province():
    out = run_bench("predict_day.py", "--runs", "1", "--eager-runs", "0")
    steady = seconds(out, r"\| steady \| 1 \| ([\d.]+) \|")
    cold = seconds(out, r"\| cold \| 1 \| ([\d.]+) \|")
    assert cold > steady                                         # cold computes 7 spatial passes, steady one
    assert "eager" not in out.split("| case |")[1]


def test_api_load_measures_every_kind_with_its_own_light_client():
    """A few seconds of bench/api_load.py on a 3-day full-province product: every kind answered,
    no 5xx, no client error, the server's histogram and both CPU figures reported."""
    out = run_bench("api_load.py", "--days", "3", "--clients", "4", "--seconds", "4", "--workers", "1",
                    timeout=600)
    rows = {m.group(1): m.group(2).split(" | ") for m in re.finditer(r"^\| (point|area|map|tile) \| (.*) \|$", out,
                                                                      flags=re.M)}
    assert set(rows) == {"point", "area", "map", "tile"}, out[-2000:]
    for kind, cells in rows.items():
        requests, five_xx, other, errors = int(cells[0]), cells[5], cells[6], cells[7]
        assert requests > 0 and (five_xx, other, errors) == ("0", "0", "0"), (kind, cells)
        assert cells[8].startswith("<= ") and cells[9].endswith("%"), (kind, cells)
    generator = float(re.search(r"load generator \(this process, asyncio streams\) ([\d.]+) cores", out).group(1))
    assert 0 <= generator < 1.0 and re.search(r"server \(all its processes\) [\d.]+ cores", out)
