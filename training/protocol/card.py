"""The model card generated for every registered version (logged with it as ``model-card.md``).

It carries what the run measured on its held-out stations, next to raw GLEAM, raw ERA5-Land, every
baseline fitted on the same training stations and the champion, the paired comparisons the gate
used, and the plots' names.  docs/model-card.md explains how to read it; the cross-validated
numbers with intervals over blocked folds come from ``etfuse evaluate`` (the protocol report).
"""

from __future__ import annotations

import pandas as pd

from etfuse.settings import Settings
from training.gate import Comparison


def _table(table: pd.DataFrame, group: bool) -> str:
    cols = (["group"] if group else []) + ["model", "n", "rmse", "mae", "rb_percent", "cc", "kge"]
    head = "| " + " | ".join(c.replace("rb_percent", "RB %").upper() if c not in ("group", "model", "n") else c
                             for c in cols) + " |"
    lines = [head, "|" + "---|" * len(cols)]
    for rec in table[cols].to_dict("records"):
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in rec.values()) + " |")
    return "\n".join(lines)


def model_card(*, settings: Settings, data_window: dict[str, str], params: dict, overall: pd.DataFrame,
               by_season: pd.DataFrame, by_station: pd.DataFrame, gate_comparisons: list[Comparison],
               plots: list[str], code_version: str, interval: pd.DataFrame | None = None,
               interval_note: str = "") -> str:
    """The card as Markdown; every number comes from the run's own tables."""
    lines = ["# etfuse GCN-GRU model card (generated)", "",
             f"Code {code_version}; region {settings.region.name}; data {data_window.get('start')}.."
             f"{data_window.get('end')}; held-out stations {data_window.get('heldout_stations', '-')}; final "
             f"period from {data_window.get('temporal_holdout_start', '-')}.", "",
             "Training: " + ", ".join(f"{k}={params[k]}" for k in ("hidden", "gcn_layers", "epochs", "patience",
                                                                    "learning_rate", "best_epoch", "window_days")
                                      if k in params), "",
             "## Held-out station-days: every model on the same days (mm/day, RB in %)", "",
             "`fused` is this version; `baseline_*` are fitted on the same training stations (see "
             "docs/model-card.md); `gleam`/`era5land` are the raw products.", "",
             _table(overall, group=False), "",
             "## What the gate compared (paired 95 % block-bootstrap intervals)", "",
             "| reference | RMSE diff [mm/d] | 95 % interval | beyond interval |", "|---|---|---|---|"]
    for c in gate_comparisons:
        lines.append(f"| {c.reference} | {c.diff:+.4f} | [{c.lo:+.4f}, {c.hi:+.4f}] | "
                     f"{'yes' if c.hi < 0 else 'no'} |")
    lines += ["", "The gate promotes only when every interval lies below 0; its decision and reasons are on "
              "the version (`etfuse models show <version>`).", "",
              "## Per season", "", _table(by_season, group=True), ""]
    if interval is not None and len(interval):
        lines += ["## 90 % interval: coverage of held-out station-days", "", interval_note, "",
                  "| season | n | coverage | mean width [mm/d] |", "|---|---|---|---|"]
        lines += [f"| {r.season} | {r.n} | {r.coverage:.1%} | {r.mean_width_mm:.2f} |" for r in interval.itertuples()]
        lines += [""]
    lines += ["## Per held-out station", "", _table(by_station, group=True), "",
              "## Plots (MLflow run, folder plots/)", ""] + [f"- {p}" for p in plots]
    return "\n".join(lines) + "\n"
