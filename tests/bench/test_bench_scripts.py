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
