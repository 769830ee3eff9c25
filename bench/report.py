"""What every benchmark records: its section appended to bench/results.md, and the machine it ran on
(figures from a 2-core machine mean little without it)."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

RESULTS = Path(__file__).resolve().with_name("results.md")


def machine_facts(*packages: str, extra: str = "") -> str:
    """nproc, RAM, python, the installed versions of ``packages`` (distribution names), ``extra``
    and the platform, as one line."""
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    parts = [f"nproc {os.cpu_count()}", f"RAM {ram_gib:.1f} GiB", f"python {platform.python_version()}"]
    for name in packages:
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} not installed")
    if extra:
        parts.append(extra)
    parts.append(platform.platform())
    return ", ".join(parts)


def append_results(lines: list[str], results: Path = RESULTS) -> None:
    """Append one benchmark's section (markdown lines) to ``results``, creating it with its header."""
    if not results.exists():
        results.write_text("# Benchmark results\n\nAppended by the scripts in bench/; newest last.\n", encoding="utf-8")
    with open(results, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    print(f"appended to {results}")


def publish(lines: list[str], *, append: bool) -> None:
    """Print a benchmark's section, and append it to the results unless told not to."""
    print("\n".join(lines))
    if append:
        append_results(lines)
