"""The protocol's report: JSON (every table), Markdown (what a person reads) and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from etfuse.settings import Settings
from training.protocol.run import ProtocolResult
from training.protocol.scores import common_rows, markdown_difference, markdown_table


def verdict(result: ProtocolResult, model: str = "gcn_gru") -> str:
    """One sentence: does ``model`` beat the strongest baseline beyond the bootstrap interval on the folds?"""
    diff = result.cv.get("difference")
    if diff is None or model not in set(diff["model"]):
        return f"{model} was not run; the strongest baseline is {result.strongest_baseline}."
    rec = diff.set_index("model").loc[model]
    base = result.strongest_baseline
    span = f"RMSE difference {rec['diff']:+.3f} mm/d, 95 % interval [{rec['lo']:+.3f}, {rec['hi']:+.3f}]"
    if rec["hi"] < 0:
        return f"{model} beats the strongest baseline ({base}) beyond the bootstrap interval: {span}."
    if rec["lo"] > 0:
        return f"{model} is WORSE than the strongest baseline ({base}): {span}."
    return f"{model} does NOT beat the strongest baseline ({base}) beyond the bootstrap interval (a tie): {span}."


def to_markdown(result: ProtocolResult, title: str, settings: Settings) -> str:
    cfg = settings.evaluation
    epochs = {f["variant"]: [] for f in result.fits}
    for f in result.fits:
        epochs[f["variant"]].append(f"{f['best_epoch']}/{f['epochs_run']}")
    lines = [f"# {title}", "",
             f"Spatially blocked {len(result.folds)}-fold cross-validation ({cfg.block_km:g} km blocks) over "
             f"{sum(len(f.test_stations) for f in result.folds)} development stations; final test: "
             f"{len(result.final.stations)} stations ({', '.join(result.final.stations) or 'none'}) and every day from "
             f"{result.final.start:%Y-%m-%d}, never used for training, early stopping, selection or the gate. "
             f"95 % intervals: block bootstrap ({cfg.bootstrap_samples} resamples of spatial block x "
             f"{cfg.bootstrap_block_days}-day clusters). Scores in mm/day (RB in %).", "",
             f"**Verdict:** {verdict(result)}", "",
             f"Strongest baseline on the folds: **{result.strongest_baseline}**.", "",
             "## Cross-validation (out-of-fold, development stations)", "", markdown_table(result.cv["overall"]), ""]
    if "difference" in result.cv:
        lines += ["### RMSE difference with the strongest baseline (paired bootstrap)", "",
                  markdown_difference(result.cv["difference"]), ""]
    if "ablation" in result.cv:
        lines += ["### Ablations: RMSE difference with the full GCN-GRU (paired bootstrap)", "",
                  "Positive = the variant is worse without the part it removes, i.e. the part earns its place "
                  "when the interval excludes 0.", "", markdown_difference(result.cv["ablation"]), ""]
    for name, head in (("season", "per season"), ("regime", "per regime")):
        lines += [f"### Cross-validation {head}", "", markdown_table(result.cv[name]), ""]
    if result.final_test:
        lines += ["## Final test (scored once, after all choices)", "", markdown_table(result.final_test["overall"]), ""]
        if "difference" in result.final_test:
            lines += [markdown_difference(result.final_test["difference"]), ""]
    if result.truth is not None and len(result.truth):
        t = result.truth
        lines += ["## Against the gridded truth (whole grid, days spread over the final test period)", "",
                  f"{int(t['days'].iloc[0])} days; `away` = {int(t['cells_away'].iloc[0])} cells at least "
                  f"{cfg.away_km:g} km from every development station. Seam = mean |neighbour difference| across "
                  "source-cell edges minus inside source cells [mm/d] (the truth's own value beside it; above "
                  "the truth's = the source's blocks show through).", "",
                  "| model | RMSE all | RMSE away | RMSE near | seam 0.1 deg (truth) | seam 0.25 deg (truth) |",
                  "|---|---|---|---|---|---|"]
        for rec in t.to_dict("records"):
            lines.append(f"| {rec['model']} | {rec['rmse_all']:.3f} | {rec['rmse_away']:.3f} | {rec['rmse_near']:.3f} "
                         f"| {rec['seam_era5land_0.1deg']:.3f} ({rec['truth_seam_era5land_0.1deg']:.3f}) "
                         f"| {rec['seam_gleam_0.25deg']:.3f} ({rec['truth_seam_gleam_0.25deg']:.3f}) |")
        lines.append("")
    if result.interval is not None and len(result.interval):
        c = result.interval_calibration
        lines += ["## 90 % interval of the GCN-GRU on the final test", "",
                  f"Raw 5/95 % quantile half-widths scaled per season by lower/upper factors calibrated on the "
                  f"folds' out-of-fold station-days ({c.describe()}). Target: 87-93 % in every row.", "",
                  "| season | n | coverage | raw coverage | mean width [mm/d] |", "|---|---|---|---|---|"]
        lines += [f"| {r.season} | {r.n} | {r.coverage:.1%} | {r.raw_coverage:.1%} | {r.mean_width_mm:.2f} |"
                  for r in result.interval.itertuples()]
        lines.append("")
    lines += ["## Cost", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in result.timings.items()]
    if epochs:
        lines += ["", "GCN-GRU fits (best epoch / epochs run, per fold then final): "
                  + "; ".join(f"{k}: {', '.join(v)}" for k, v in epochs.items())]
    return "\n".join(lines) + "\n"


def plots(result: ProtocolResult, folder: Path) -> list[Path]:
    """Scatter of the main models, RMSE with intervals per season, RMSE per station (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    data = common_rows(result.cv_frame, result.models)
    show = [m for m in ("gcn_gru", result.strongest_baseline, "linear_both", "era5land") if m in result.models]
    show = list(dict.fromkeys(show))
    if data.empty:
        return paths
    top = float(np.nanpercentile(data[["obs", *show]].to_numpy(), 99.5))
    fig, axes = plt.subplots(1, len(show), figsize=(4 * len(show), 4), sharex=True, sharey=True, squeeze=False)
    for ax, model in zip(axes[0], show):
        ax.scatter(data["obs"], data[model], s=3, alpha=0.3)
        ax.plot([0, top], [0, top], color="k", lw=0.8)
        ax.set_title(model)
        ax.set_xlabel("station ET [mm/day]")
    axes[0, 0].set_ylabel("estimated ET [mm/day]")
    fig.tight_layout()
    paths.append(folder / "cv_scatter.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    for name, xlabel in (("season", "season"), ("station", "held-out station")):
        table = result.cv[name]
        table = table[table["model"].isin([m for m in result.models if m not in ("gleam", "era5land")])]
        groups = list(dict.fromkeys(table["group"]))
        models = list(dict.fromkeys(table["model"]))
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(groups) * len(models) / 3), 4))
        width = 0.8 / len(models)
        for k, model in enumerate(models):
            part = table[table["model"] == model].set_index("group").reindex(groups)
            x = np.arange(len(groups)) + k * width
            err = np.abs(np.stack([part["rmse"] - part["rmse_lo"], part["rmse_hi"] - part["rmse"]]))
            ax.bar(x, part["rmse"], width, yerr=err, label=model, capsize=1)
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
        ax.set_xticklabels(groups, rotation=90 if name == "station" else 0, fontsize=7)
        ax.set_ylabel("RMSE [mm/day], 95 % interval")
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=6, ncol=3)
        fig.tight_layout()
        paths.append(folder / f"cv_rmse_by_{name}.png")
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    return paths


def write_report(result: ProtocolResult, folder: Path, settings: Settings,
                 title: str = "etfuse evaluation") -> dict[str, Path]:
    """``report.md``, ``report.json`` and ``plots/*.png`` under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / "report.md"
    md.write_text(to_markdown(result, title, settings))
    tables = {f"cv_{k}": v for k, v in result.cv.items()} | {f"final_{k}": v for k, v in result.final_test.items()}
    payload = {"final_test": {"stations": list(result.final.stations), "start": f"{result.final.start:%Y-%m-%d}"},
               "folds": [{"index": f.index, "test_stations": list(f.test_stations), "train": len(f.train),
                          "validation": len(f.validation), "test": len(f.test)} for f in result.folds],
               "strongest_baseline": result.strongest_baseline, "verdict": verdict(result),
               "timings_s": result.timings, "fits": result.fits,
               "truth": None if result.truth is None else result.truth.replace({np.nan: None}).to_dict("records"),
               "interval": None if result.interval is None else {
                   "coverage": result.interval.replace({np.nan: None}).to_dict("records"),
                   "calibration": json.loads(result.interval_calibration.to_json())},
               "tables": {k: v.replace({np.nan: None}).to_dict("records") for k, v in tables.items()}}
    js = folder / "report.json"
    js.write_text(json.dumps(payload, indent=2, default=str))
    paths = {"markdown": md, "json": js}
    for p in plots(result, folder / "plots"):
        paths[p.stem] = p
    return paths


def flat_metrics(result: ProtocolResult, prefix: str = "cv") -> dict[str, float]:
    """Flat numbers for MLflow: ``cv_<model>_<score>`` (+ ``_lo``/``_hi``) and the difference with
    the strongest baseline ``cv_<model>_minus_baseline_rmse`` (+ ``_lo``/``_hi``)."""
    out: dict[str, float] = {}
    for rec in result.cv["overall"].to_dict("records"):
        for key in ("rmse", "rmse_lo", "rmse_hi", "mae", "rb_percent", "cc", "kge"):
            out[f"{prefix}_{rec['model']}_{key}"] = float(rec[key])
    for rec in result.cv.get("difference", pd.DataFrame()).to_dict("records"):
        for key, name in (("diff", ""), ("lo", "_lo"), ("hi", "_hi")):
            out[f"{prefix}_{rec['model']}_minus_baseline_rmse{name}"] = float(rec[key])
    return out
