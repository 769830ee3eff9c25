"""Run the whole protocol on a ``SampleSet``: folds, baselines, the GCN-GRU (and its ablations),
out-of-fold scores with intervals, then one fit on all development data scored on the final test.

Scores on the folds ("cross-validation") are what selection and the gate may use; the final test
is scored once, reported, and never feeds back into any decision.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from etfuse.interval import IntervalCalibration, calibrate, coverage_table
from etfuse.settings import Settings
from training.calibration import with_interval
from training.protocol.baselines import baselines
from training.protocol.folds import (FinalTest, Fold, development_samples, final_test, final_test_keys, make_folds,
                                     station_table)
from training.protocol.frame import cell_frame
from training.protocol.scores import difference_table, score_tables
from training.protocol.variants import fit_and_predict
from training.samples import SampleSet

log = logging.getLogger(__name__)

#: the raw products, scored as they come
RAW = {"gleam": "gleam_et", "era5land": "era5land_et"}


@dataclass
class ProtocolResult:
    final: FinalTest
    folds: list[Fold]
    models: list[str]
    cv_frame: pd.DataFrame                # out-of-fold predictions of every model, development stations
    final_frame: pd.DataFrame             # final-test predictions
    cv: dict[str, pd.DataFrame]           # score tables on the folds
    final_test: dict[str, pd.DataFrame]   # score tables on the final test
    strongest_baseline: str
    timings: dict[str, float] = field(default_factory=dict)
    fits: list[dict] = field(default_factory=list)
    dev_stations: pd.DataFrame = field(default_factory=pd.DataFrame)   # the stations the final models saw
    final_baselines: dict[str, object] = field(default_factory=dict)   # fitted on all development data
    final_models: dict[str, object] = field(default_factory=dict)      # GCN-GRU variants, idem
    truth: pd.DataFrame | None = None     # gridded-truth scores (training/protocol/truth.py), synthetic worlds
    interval: pd.DataFrame | None = None  # 90 % interval coverage of the final test, overall and per season
    interval_calibration: IntervalCalibration | None = None   # its factors, from the folds' out-of-fold rows


def _fit_baselines(train: pd.DataFrame, test: pd.DataFrame, seed: int, out: pd.DataFrame, rows: np.ndarray,
                   timings: dict[str, float]) -> dict[str, object]:
    fitted = {}
    for name, model in baselines(seed).items():
        t0 = time.perf_counter()
        out.loc[rows, name] = model.fit(train).predict(test)
        fitted[name] = model
        timings[f"baseline:{name}"] = timings.get(f"baseline:{name}", 0.0) + time.perf_counter() - t0
    return fitted


def run_protocol(samples: SampleSet, settings: Settings, *, variants: tuple[str, ...] = ("gcn_gru",),
                 final: bool = True, echo: Callable[[str], None] = log.info) -> ProtocolResult:
    """Cross-validate every baseline and ``variants`` on the same spatial folds; score the final test."""
    cfg = settings.evaluation
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    test_set = final_test(samples, settings)
    dev = development_samples(samples, test_set)
    folds = make_folds(dev, settings)
    dev_blocks = station_table(dev, cfg.block_km)["block"].to_numpy()
    echo(f"protocol: {len(dev.stations)} development stations x {len(dev.days)} days in {len(folds)} folds "
         f"of {cfg.block_km:g} km blocks; final test: {len(test_set.stations)} stations and every day from "
         f"{test_set.start:%Y-%m-%d}")
    frame = cell_frame(dev, dev.keys(), dev_blocks)
    for raw, column in RAW.items():
        frame[raw] = frame[column]
    index = {(s, d): i for i, (s, d) in enumerate(zip(frame["s"], frame["d"]))}
    fits: list[dict] = []
    for fold in folds:
        echo(f"fold {fold.index + 1}/{len(folds)}: {len(fold.test_stations)} held-out stations, "
             f"{len(fold.train)} training / {len(fold.validation)} early-stopping / {len(fold.test)} test station-days")
        rows = np.array([index[(s, d)] for s, d in zip(fold.test["s"], fold.test["d"])])
        train_rows = np.array([index[(s, d)] for s, d in
                               zip(pd.concat([fold.train, fold.validation])["s"], pd.concat([fold.train, fold.validation])["d"])])
        _fit_baselines(frame.iloc[train_rows], frame.iloc[rows], cfg.seed, frame, rows, timings)
        for variant in variants:
            pred, info, _ = fit_and_predict(dev, variant, fold.train, fold.validation, fold.test, settings)
            frame.loc[rows, variant] = pred[:, 0]
            frame.loc[rows, f"{variant}_q05_raw"], frame.loc[rows, f"{variant}_q95_raw"] = pred[:, 1], pred[:, 2]
            fits.append({"fold": fold.index, **info})
            timings[f"model:{variant}"] = timings.get(f"model:{variant}", 0.0) + info["seconds"]
            echo(f"  {variant}: {info['seconds']:.0f} s, best epoch {info['best_epoch']} of {info['epochs_run']}")
    base_names = list(baselines(cfg.seed))
    models = list(variants) + base_names + list(RAW)
    bootstrap = dict(block_days=cfg.bootstrap_block_days, samples=cfg.bootstrap_samples, seed=cfg.seed)
    cv = score_tables(frame, models, **bootstrap)
    overall = cv["overall"].set_index("model")["rmse"]
    strongest = str(overall[base_names].idxmin())
    cv["difference"] = difference_table(frame, models, reference=strongest, **bootstrap)
    ablations = [v for v in variants if v != "gcn_gru"]
    if "gcn_gru" in variants and ablations:
        # does each removed part earn its place? paired with the full model on the same rows as
        # every other table (where all models have a value)
        paired = difference_table(frame, models, reference="gcn_gru", **bootstrap)
        cv["ablation"] = paired[paired["model"].isin(ablations)].reset_index(drop=True)
    timings["cross_validation"] = time.perf_counter() - t_all

    final_frame = pd.DataFrame()
    final_tables: dict[str, pd.DataFrame] = {}
    final_baselines: dict[str, object] = {}
    final_models: dict[str, object] = {}
    if final:
        t0 = time.perf_counter()
        fkeys = final_test_keys(samples, test_set)
        if len(fkeys):
            full_blocks = station_table(samples, cfg.block_km)["block"].to_numpy()
            final_frame = cell_frame(samples, fkeys, full_blocks)
            for raw, column in RAW.items():
                final_frame[raw] = final_frame[column]
            final_baselines = _fit_baselines(frame, final_frame, cfg.seed, final_frame, final_frame.index.to_numpy(), {})
            all_keys = dev.keys()
            rng = np.random.default_rng(cfg.seed + 3)
            order = rng.permutation(len(all_keys))
            n_val = max(1, int(round(settings.training.validation_fraction * len(all_keys))))
            for variant in variants:
                pred, info, model = fit_and_predict(dev, variant, all_keys.iloc[np.sort(order[n_val:])],
                                                    all_keys.iloc[np.sort(order[:n_val])], fkeys, settings,
                                                    test_samples=samples)
                final_frame[variant] = pred[:, 0]
                final_frame[f"{variant}_q05_raw"], final_frame[f"{variant}_q95_raw"] = pred[:, 1], pred[:, 2]
                final_models[variant] = model
                fits.append({"fold": "final", **info})
            final_tables = score_tables(final_frame, models, block_days=cfg.bootstrap_block_days,
                                        samples=cfg.bootstrap_samples, seed=cfg.seed, reference=strongest)
        timings["final_test"] = time.perf_counter() - t0
    interval, calibration = None, None
    if "gcn_gru" in variants and "gcn_gru" in final_frame:
        interval, calibration = interval_on_final_test(frame, final_frame)
    timings["total"] = time.perf_counter() - t_all
    return ProtocolResult(final=test_set, folds=folds, models=models, cv_frame=frame, final_frame=final_frame, cv=cv,
                          final_test=final_tables, strongest_baseline=strongest, timings=timings, fits=fits,
                          dev_stations=dev.stations, final_baselines=final_baselines, final_models=final_models,
                          interval=interval, interval_calibration=calibration)


def interval_on_final_test(cv_frame: pd.DataFrame, final_frame: pd.DataFrame, model: str = "gcn_gru"
                           ) -> tuple[pd.DataFrame, IntervalCalibration]:
    """Calibrate the interval on the folds' out-of-fold predictions (each at stations its model never
    saw, as nearly every grid cell is), apply it to the final model's raw quantiles and report the
    coverage of the final test's station-days, overall and per season."""
    cv = cv_frame.dropna(subset=["obs", model, f"{model}_q05_raw", f"{model}_q95_raw"])
    calibration = calibrate(cv[model], cv[f"{model}_q05_raw"], cv[f"{model}_q95_raw"], cv["obs"],
                            cv["season"].to_numpy())
    final = with_interval(final_frame.dropna(subset=["obs", model]), calibration, et=model, q05=f"{model}_q05_raw",
                          q95=f"{model}_q95_raw", prefix=model)
    raw = coverage_table(final, f"{model}_q05_raw", f"{model}_q95_raw").set_index("season")["coverage"]
    table = coverage_table(final, f"{model}_lower", f"{model}_upper")
    return table.assign(raw_coverage=table["season"].map(raw)), calibration
