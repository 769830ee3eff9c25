"""The honest yardstick on synthetic worlds: for each seed, generate a world (``etfuse synth``,
e.g. ``--profile realistic``), harmonise it into a store, run the evaluation protocol (blocked
cross-validation, every baseline, the GCN-GRU and optionally its ablations, the final test) and
write its report; then one Markdown table over the seeds.

    python bench/yardstick.py --seeds 1,2,3 --region qinghai-coarse --profile realistic \\
        --start 1999-07-01 --end 2001-06-30 --variants all --out bench/yardstick-2yr

Each seed's report (report.md, report.json, plots/) lands in ``<out>/seed<k>/``; the combined
table in ``<out>/summary.md``.  Worlds and stores go to ``--work`` (not the repository).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def prepare(seed: int, args, work: Path):
    """World and harmonised store of one seed (reused when already there); returns settings."""
    from etfuse.harmonise import harmonise_into_store
    from etfuse.settings import load_settings
    from etfuse.store import HarmonisedStore

    home = work / f"seed{seed}"
    world = home / "world"
    evaluation = {"block_km": args.block_km, "folds": args.folds, "cv_epochs": args.cv_epochs,
                  "cv_patience": args.cv_patience, "bootstrap_samples": args.bootstrap_samples, "seed": seed}
    settings = load_settings(home=home, region=args.region, evaluation=evaluation,
                             static={"elevation_file": str(world / "static" / "elevation.nc")},
                             training={"seed": seed})
    if not (world / "manifest.json").exists():
        t0 = time.perf_counter()
        cmd = [str(Path(sys.executable).parent / "etfuse"), "synth", "--out", str(world), "--region", args.region,
               "--start", args.start, "--end", args.end, "--seed", str(seed)]
        if args.profile:
            cmd += ["--profile", args.profile]
        subprocess.run(cmd, check=True, cwd=ROOT)
        print(f"seed {seed}: world in {time.perf_counter() - t0:.0f} s", flush=True)
    done = home / "harmonised.done"
    if not done.exists():
        t0 = time.perf_counter()
        store = HarmonisedStore.of(settings)
        for source in ("era5land", "gleam", "modis", "cma", "stations", "fluxnet"):
            for path in sorted((world / "landing" / source).glob("*")):
                harmonise_into_store(source, path, store, settings=settings)
        done.write_text("ok\n")
        print(f"seed {seed}: harmonised in {time.perf_counter() - t0:.0f} s", flush=True)
    return settings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--region", default="test")
    p.add_argument("--profile", default=None, help="etfuse synth --profile (e.g. realistic); default the fast world")
    p.add_argument("--start", default="2020-01-01")
    p.add_argument("--end", default="2021-12-31")
    p.add_argument("--variants", default="gcn_gru", help="comma-separated, 'all' or 'none'")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--block-km", type=float, default=150.0)
    p.add_argument("--cv-epochs", type=int, default=12)
    p.add_argument("--cv-patience", type=int, default=3)
    p.add_argument("--bootstrap-samples", type=int, default=1000)
    p.add_argument("--work", type=Path, default=Path("/tmp/etfuse-yardstick"))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "yardstick")
    p.add_argument("--truth-days", type=int, default=14, help="days of the final test period scored on the grid")
    p.add_argument("--no-truth", action="store_true", help="skip the gridded-truth scores (with --summary-only: "
                                                              "leave them out of summary.md)")
    p.add_argument("--summary-only", action="store_true",
                   help="only (re)build summary.md from the seeds' report.json files under --out (seeds run apart)")
    args = p.parse_args(argv)
    if args.summary_only:
        rows = [from_report(json.loads((args.out / f"seed{s}" / "report.json").read_text()), int(s))
                for s in args.seeds.split(",")]
        (args.out / "summary.md").write_text(summary(rows, args))
        print((args.out / "summary.md").read_text())
        return 0

    from training.protocol.report import write_report
    from training.protocol.run import run_protocol
    from training.protocol.truth import evaluate_truth
    from training.protocol.variants import VARIANTS
    from training.samples import build_samples
    from etfuse.store import HarmonisedStore

    variants = VARIANTS if args.variants == "all" else tuple(v for v in args.variants.split(",") if v and v != "none")
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        settings = prepare(seed, args, args.work)
        t0 = time.perf_counter()
        samples = build_samples(HarmonisedStore.of(settings), settings)
        t_samples = time.perf_counter() - t0
        result = run_protocol(samples, settings, variants=variants, echo=lambda m: print(f"[seed {seed}] {m}", flush=True))
        result.timings["samples"] = t_samples
        truth = settings.home / "world" / "truth"
        if truth.is_dir() and not args.no_truth:
            t0 = time.perf_counter()
            result.truth = evaluate_truth(result, settings, HarmonisedStore.of(settings), truth,
                                          args.out / f"seed{seed}", n_days=args.truth_days).table
            result.timings["truth"] = time.perf_counter() - t0
        title = f"{args.profile or 'default'} world, region {args.region}, {args.start}..{args.end}, seed {seed}"
        write_report(result, args.out / f"seed{seed}", settings, title=title)
        # every out-of-fold and final-test prediction (with the raw quantiles), for re-analysis
        # without retraining; in the work folder, not the repository
        result.cv_frame.to_pickle(settings.home / "protocol_cv_frame.pkl")
        result.final_frame.to_pickle(settings.home / "protocol_final_frame.pkl")
        overall = result.cv["overall"].assign(seed=seed, split="cv")
        final = result.final_test.get("overall", pd.DataFrame()).assign(seed=seed, split="final")
        diff = result.cv.get("difference", pd.DataFrame()).assign(seed=seed)
        truth_table = None if result.truth is None else result.truth.assign(seed=seed)
        ablation = result.cv.get("ablation", pd.DataFrame()).assign(seed=seed)
        rows.append((overall, final, diff, result.strongest_baseline, result.timings, truth_table, ablation))
        print(f"seed {seed}: protocol {result.timings['total']:.0f} s (+ samples {t_samples:.0f} s)", flush=True)
    (args.out / "summary.md").write_text(summary(rows, args))
    (args.out / "summary.json").write_text(json.dumps(
        [{"seed": int(r[0]["seed"].iloc[0]), "strongest": r[3], "timings_s": r[4]} for r in rows], indent=2))
    print((args.out / "summary.md").read_text())
    return 0


def from_report(report: dict, seed: int):
    """One seed's row of the summary from its report.json (as written by training/protocol/report.py)."""
    tables = report["tables"]
    frame = lambda key: pd.DataFrame(tables.get(key, [])).assign(seed=seed)  # noqa: E731
    truth = pd.DataFrame(report["truth"]).assign(seed=seed) if report.get("truth") else None
    return frame("cv_overall"), frame("final_overall"), frame("cv_difference"), report["strongest_baseline"], \
        report["timings_s"], truth, frame("cv_ablation")


def summary(rows, args) -> str:
    """RMSE [lo, hi] per model and seed (cross-validation and final test), and the verdicts."""
    lines = [f"# Yardstick: {args.profile or 'default'} world, region {args.region}, {args.start}..{args.end}", "",
             f"Seeds {args.seeds}; {args.folds}-fold spatially blocked CV ({args.block_km:g} km blocks); GCN-GRU "
             f"variants trained at most {args.cv_epochs} epochs (patience {args.cv_patience}) per fold. "
             "RMSE in mm/day with 95 % block-bootstrap intervals. Per-seed reports: seed<k>/report.md.", ""]
    for split in ("cv", "final"):
        frames = [r[0] if split == "cv" else r[1] for r in rows]
        frames = [f for f in frames if len(f)]
        if not frames:
            continue
        table = pd.concat(frames)
        table["cell"] = [f"{r:.3f} [{lo:.3f}, {hi:.3f}]" for r, lo, hi in zip(table["rmse"], table["rmse_lo"],
                                                                            table["rmse_hi"])]
        wide = table.pivot(index="model", columns="seed", values="cell")
        order = table.groupby("model")["rmse"].median().sort_values().index
        seeds = list(wide.columns)
        lines += [f"## RMSE, {'cross-validation (out-of-fold)' if split == 'cv' else 'final test'}", "",
                  "| model | " + " | ".join(f"seed {s}" for s in seeds) + " | median |",
                  "|---|" + "---|" * (len(seeds) + 1)]
        med = table.groupby("model")["rmse"].median()
        for model in order:
            lines.append(f"| {model} | " + " | ".join(str(wide.loc[model, s]) for s in seeds) + f" | {med[model]:.3f} |")
        lines.append("")
    lines += ["## GCN-GRU variants minus the strongest baseline (RMSE, paired interval, cross-validation)", "",
              "| seed | strongest baseline | model | diff | 95 % interval | verdict |", "|---|---|---|---|---|---|"]
    for _, _, diff, strongest, *_ in rows:
        for rec in diff.to_dict("records"):
            if rec["model"] in ("gleam", "era5land") or rec["model"].startswith(("linear", "qmap", "clim", "hgb")):
                continue
            verdict = "better beyond interval" if rec["hi"] < 0 else ("worse" if rec["lo"] > 0 else "tie")
            lines.append(f"| {rec['seed']} | {strongest} | {rec['model']} | {rec['diff']:+.3f} | "
                         f"[{rec['lo']:+.3f}, {rec['hi']:+.3f}] | {verdict} |")
    ablation_rows = [r[6] for r in rows if len(r) > 6 and len(r[6])]
    if ablation_rows:
        lines += ["", "## Ablations minus the full GCN-GRU (RMSE, paired interval, cross-validation)", "",
                  "Positive = worse without the part; the part earns its place when the whole interval is above 0.",
                  "", "| seed | variant | diff | 95 % interval | the removed part |", "|---|---|---|---|---|"]
        for rec in pd.concat(ablation_rows).sort_values(["model", "seed"]).to_dict("records"):
            verdict = "earns its place" if rec["lo"] > 0 else ("hurts" if rec["hi"] < 0 else "not shown (tie)")
            lines.append(f"| {rec['seed']} | {rec['model']} | {rec['diff']:+.3f} | [{rec['lo']:+.3f}, {rec['hi']:+.3f}] "
                         f"| {verdict} |")
    truth_rows = [] if args.no_truth else [r[5] for r in rows if len(r) > 5 and r[5] is not None and len(r[5])]
    if truth_rows:
        t = pd.concat(truth_rows)
        lines += ["", "## Against the gridded truth (whole grid, days spread over the final test period)", "",
                  "RMSE [mm/d] over all cells and over cells >= 20 km from every development station; seam = mean "
                  "|neighbour difference| across minus inside source cells [mm/d] (truth's value in brackets).", "",
                  "| seed | model | RMSE all | RMSE away | seam 0.1 deg | seam 0.25 deg |", "|---|---|---|---|---|---|"]
        for rec in t.to_dict("records"):
            lines.append(f"| {rec['seed']} | {rec['model']} | {rec['rmse_all']:.3f} | {rec['rmse_away']:.3f} | "
                         f"{rec['seam_era5land_0.1deg']:.3f} ({rec['truth_seam_era5land_0.1deg']:.3f}) | "
                         f"{rec['seam_gleam_0.25deg']:.3f} ({rec['truth_seam_gleam_0.25deg']:.3f}) |")
    lines += ["", "## Cost [s] (2 cores shared with other work; noisy)", "",
              "| seed | samples | cross-validation | final test | total protocol | gridded truth |",
              "|---|---|---|---|---|---|"]
    for overall, _, _, _, t, *_ in rows:
        lines.append(f"| {overall['seed'].iloc[0]} | {t.get('samples', 0):.0f} | {t.get('cross_validation', 0):.0f} "
                     f"| {t.get('final_test', 0):.0f} | {t.get('total', 0):.0f} | {t.get('truth', 0):.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
