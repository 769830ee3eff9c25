"""How far below the strongest baseline can any product get at the stations of a synthetic world?

The model issue asks for a fused RMSE at least 15 % below the strongest baseline (``linear_both``)
in cross-validation.  Station "ET" is pan evaporation times a hidden per-station, per-season
coefficient plus representativeness error, so even a perfect product has an RMSE against the
stations.  This bench measures, on the protocol's own folds and station-days of each seed:

* ``linear_both`` (the strongest baseline), fitted on station observations;
* the **truth itself** at the station's cell (the best any gridded product can be);
* two **oracle learners** trained on the truth at the training stations' cells instead of the
  noisy observations (``linear_both`` and gradient boosting on every per-cell feature): what the
  model's inputs can tell about the truth, with noise-free targets;

and prints each as RMSE against the observations and against the truth, and as a share below
``linear_both``.  It reads the worlds and stores that bench/yardstick.py prepared under ``--work``.

    python bench/skill_ceiling.py --work /tmp/etfuse-yardstick --seeds 1,2,3
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def cv_frame(home: Path, region: str, seed: int) -> pd.DataFrame:
    """The protocol's development station-days with their fold and the truth at the station's cell."""
    from etfuse.settings import load_settings
    from etfuse.store import HarmonisedStore
    from training.protocol.folds import development_samples, final_test, make_folds, station_table
    from training.protocol.frame import cell_frame
    from training.samples import build_samples
    world = home / "world"
    settings = load_settings(home=home, region=region, evaluation={"block_km": 150.0, "folds": 5, "seed": seed},
                             static={"elevation_file": str(world / "static" / "elevation.nc")}, training={"seed": seed})
    samples = build_samples(HarmonisedStore.of(settings), settings)
    dev = development_samples(samples, final_test(samples, settings))
    frame = cell_frame(dev, dev.keys(), station_table(dev, settings.evaluation.block_km)["block"].to_numpy())
    fold = {(s, d): f.index for f in make_folds(dev, settings) for s, d in zip(f.test["s"], f.test["d"])}
    frame["fold"] = [fold.get(k, -1) for k in zip(frame["s"], frame["d"])]
    truth = pd.read_csv(world / "truth" / "stations_truth.csv", parse_dates=["date"],
                        dtype={"station_id": str})[["station_id", "date", "et_truth_mm"]]
    return frame.merge(truth, on=["station_id", "date"], how="left")


def out_of_fold(frame: pd.DataFrame, make, target: str) -> np.ndarray:
    pred = np.full(len(frame), np.nan)
    folds = frame["fold"].to_numpy()
    for f in sorted(set(folds) - {-1}):
        test, train = folds == f, (folds != f) & (folds >= 0)
        part = frame[train].assign(obs=frame.loc[train, target])
        pred[test] = make().fit(part).predict(frame[test])
    return pred


def ceiling(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    from training.protocol.baselines import GradientBoosting, LinearBias
    rows = frame[(frame["fold"] >= 0) & frame["obs"].notna() & frame["et_truth_mm"].notna()].reset_index(drop=True)
    obs, truth = rows["obs"].to_numpy(), rows["et_truth_mm"].to_numpy()
    rmse = lambda p, y: float(np.sqrt(np.mean((p - y) ** 2)))  # noqa: E731
    cases = {"linear_both (obs)": out_of_fold(rows, lambda: LinearBias(("gleam", "era5land")), "obs"),
             "truth at the cell": truth,
             "oracle linear_both (trained on truth)": out_of_fold(rows, lambda: LinearBias(("gleam", "era5land")),
                                                                  "et_truth_mm"),
             "oracle hgb (trained on truth)": out_of_fold(rows, lambda: GradientBoosting(seed=seed), "et_truth_mm")}
    base = rmse(cases["linear_both (obs)"], obs)
    return pd.DataFrame([{"seed": seed, "case": name, "n": len(rows), "rmse_vs_obs": rmse(p, obs),
                          "below_linear_both_percent": 100 * (1 - rmse(p, obs) / base), "rmse_vs_truth": rmse(p, truth)}
                         for name, p in cases.items()])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/etfuse-yardstick"))
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--region", default="qinghai-coarse")
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    table = pd.concat([ceiling(cv_frame(args.work / f"seed{s}", args.region, int(s)), int(s))
                       for s in args.seeds.split(",")], ignore_index=True)
    lines = ["| seed | case | station-days | RMSE vs stations | below linear_both | RMSE vs truth |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.seed} | {r.case} | {r.n} | {r.rmse_vs_obs:.3f} | {r.below_linear_both_percent:+.1f} % | "
              f"{r.rmse_vs_truth:.3f} |" for r in table.itertuples()]
    from datetime import datetime, timezone

    from bench.report import machine_facts, publish
    publish([f"## skill_ceiling: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             f"`python bench/skill_ceiling.py --work {args.work} --seeds {args.seeds} --region {args.region}`: the "
             "protocol's cross-validation station-days (out-of-fold) of each seed's world.", "", *lines, "",
             f"Machine: {machine_facts('scikit-learn')}.", ""], append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
