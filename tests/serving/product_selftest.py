"""A writer that writes one product day again and again, for the crash tests of
tests/serving/test_product.py: they kill it (SIGKILL) at any moment and check the store.

    python -m tests.serving.product_selftest --selftest-write HOME [--region w,s,e,n,res] ...
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from typing import Sequence

import numpy as np

from serving.product import ProductStore
from serving.product_ledger import _day


def selftest_fingerprint(i: int) -> str:
    return hashlib.sha256(f"etfuse-selftest-{i}".encode()).hexdigest()


def selftest_field(shape: tuple[int, int], i: int) -> np.ndarray:
    """A deterministic ET field [mm] for self-test iteration ``i`` (0-6 mm, a few NaN cells)."""
    rows, cols = shape
    y = np.linspace(0.0, 1.0, rows, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, cols, dtype=np.float32)[None, :]
    field_mm = 3.0 + 2.5 * np.sin(6.0 * x + 0.7 * i) * np.cos(4.0 * y - 0.3 * i) + 0.05 * (i % 7)
    field_mm = field_mm.astype(np.float32)
    field_mm[: max(1, rows // 50), : max(1, cols // 50)] = np.nan
    return field_mm


def _selftest_write(args: argparse.Namespace) -> int:
    from etfuse.settings import load_settings
    w, s, e, n, res = (float(v) for v in args.region.split(","))
    settings = load_settings(home=args.home, region={"name": "selftest", "lon_min": w, "lat_min": s, "lon_max": e,
                                                     "lat_max": n, "resolution_deg": res},
                             serving={"quicklooks": bool(args.quicklooks)})
    store = ProductStore(settings)
    day = _day(args.day)
    print("ready", flush=True)
    for i in range(args.start, args.start + args.iterations):
        action = store.write_day(day, selftest_field(store.grid.shape, i), model_version=1 + i % 3,
                                 status="final", sources_used={"era5land", "gleam"},
                                 fingerprint=selftest_fingerprint(i))
        print(f"wrote {i} {action}", flush=True)
    return 0




def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.serving.product_selftest",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--selftest-write", dest="home", metavar="HOME",
                        help="write one day again and again under HOME (for crash tests: kill it at any moment)")
    parser.add_argument("--day", default="2021-07-15")
    parser.add_argument("--region", default="100.5,35.5,102.5,37.5,0.01", help="west,south,east,north,resolution")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--quicklooks", action="store_true")
    args = parser.parse_args(argv)
    if not args.home:
        parser.print_help()
        return 2
    return _selftest_write(args)


if __name__ == "__main__":
    sys.exit(main())
