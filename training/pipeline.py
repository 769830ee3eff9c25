"""The whole training path: samples -> train -> evaluate -> export -> log -> register -> gate."""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from etfuse import __version__
from etfuse.features import FEATURES
from etfuse.store import HarmonisedStore
from etfuse.settings import Settings
from training.evaluate import heldout_frame, plots, score_table, summary_metrics
from training.calibration import calibrate_frame, interval_check, interval_metrics, with_interval
from training.protocol.card import model_card
from training.protocol.heldout import add_baselines, comparisons, strongest
from training.export import export_onnx, export_serving_parts, onnx_session
from training.samples import SampleSet, build_samples, normalisation, split_samples
from training.train import FitResult, PatchBatcher, fit, predict

log = logging.getLogger(__name__)


@dataclass
class TrainingOutcome:
    version: int | None
    decision: object | None
    metrics: dict[str, float]
    table: pd.DataFrame                 # overall scores per model on the common held-out station-days
    by_set: pd.DataFrame
    fit: FitResult
    onnx_path: Path
    seconds: dict[str, float] = field(default_factory=dict)


def code_version() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        if out.returncode == 0 and out.stdout.strip():
            return f"{__version__}+{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def patch_tiles(samples: SampleSet, keys: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Gridded tiles of sample windows: ``x (B, T, size, size, F)`` and ``mask (B, size, size)``."""
    s, d = keys["s"].to_numpy(), keys["d"].to_numpy()
    t = samples.window_days
    days = d[:, None] - np.arange(t - 1, -1, -1)[None, :]
    size = samples.patch_size
    x = samples.features[s[:, None], days].reshape(len(s), t, size, size, -1)
    mask = samples.patch_valid[s].reshape(len(s), size, size).astype(np.float32)
    return x.astype(np.float32), mask


def onnx_predict(path: Path, samples: SampleSet, keys: pd.DataFrame, batch: int = 256) -> np.ndarray:
    """A registered model's ET at the station node of each key (e.g. the champion's)."""
    session = onnx_session(path, threads=2)
    out = []
    centre = samples.patch_size // 2
    for start in range(0, len(keys), batch):
        x, mask = patch_tiles(samples, keys.iloc[start:start + batch])
        out.append(session.run(["et"], {"x": x, "mask": mask})[0][:, centre, centre])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _parity_tiles(samples: SampleSet, keys: pd.DataFrame, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Real held-out windows plus one larger tile with holes in the mask and missing sources."""
    pick = keys.iloc[rng.choice(len(keys), size=min(8, len(keys)), replace=False)]
    x, mask = patch_tiles(samples, pick)
    tiles = [(x[i], mask[i]) for i in range(len(pick))]
    big = np.concatenate([np.concatenate([x[i % len(x)] for i in range(j, j + 3)], axis=2) for j in range(3)], axis=1)
    big_mask = np.ones(big.shape[1:3], np.float32)
    big_mask[:2, :] = 0
    big_mask[big.shape[1] // 2, big.shape[2] // 2] = 0
    big = big.copy()
    big[:, :, :5, FEATURES.index("gleam_et")] = np.nan
    tiles.append((big, big_mask))
    return tiles


def run_training(settings: Settings, *, registry=None, actor: str = "cli", start=None, end=None,
                 echo: Callable[[str], None] = log.info, work_dir: Path | None = None) -> TrainingOutcome:
    """Train, evaluate, export and (with a registry) log, register and gate one model."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    store = HarmonisedStore.of(settings)
    samples = build_samples(store, settings, start=start, end=end)
    split = split_samples(samples, settings)
    norm = normalisation(samples, split)
    timings["samples"] = time.perf_counter() - t
    echo(f"samples: {len(samples.stations)} station locations x {len(samples.days)} days "
         f"({samples.days[0]:%Y-%m-%d}..{samples.days[-1]:%Y-%m-%d}); train {len(split.train)}, validation "
         f"{len(split.validation)}, held out {len(split.heldout)} station-days "
         f"(stations {', '.join(split.heldout_stations)}; final period from {split.temporal_start:%Y-%m-%d})")

    t = time.perf_counter()
    result = fit(samples, split, norm, settings,
                 progress=lambda e, n, tr, va: echo(f"  epoch {e}/{n}: train MSE {tr:.3f}, validation RMSE {va:.3f} mm/d"))
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    frame = heldout_frame(samples, split)
    keys = pd.concat([split.spatial, split.temporal, split.heldout_late], ignore_index=True)
    batcher = PatchBatcher(samples, torch.device("cpu"))
    outputs = predict(result.model, batcher, keys, interval=True)
    frame["fused"], frame["fused_q05_raw"], frame["fused_q95_raw"] = outputs[:, 0], outputs[:, 1], outputs[:, 2]
    calibration, calibrated_on = calibrate_frame(frame)
    frame = with_interval(frame, calibration)
    interval_table = interval_check(frame, calibrated_on)
    echo(f"interval: {calibration.level:.0%} half-widths scaled by lower/upper factors {calibration.describe()}, "
         f"calibrated on the {calibrated_on} "
         "station-days; coverage " + ", ".join(f"{r.season} {r.coverage:.1%}" for r in interval_table.itertuples()))
    for source in ("gleam", "modis"):
        frame[f"fused_without_{source}"] = predict(result.model, batcher, keys, drop_source=source)
    models = ["fused"] + [m for m in ("gleam", "era5land") if frame[m].notna().any()]
    for raw in {"gleam", "era5land"} - set(models):
        echo(f"warning: no {raw} ET on any held-out station-day; the model cannot be compared with it and the "
             "gate will not promote it")
    champion = registry.champion() if registry is not None else None
    if champion is not None:
        path, version = registry.onnx_model_path("champion")
        try:
            frame["champion"] = onnx_predict(path, samples, keys)
            models.append("champion")
        except Exception as exc:  # noqa: BLE001 - an incompatible old champion must not stop training
            echo(f"warning: champion v{version} could not be evaluated on these inputs ({exc}); "
                 "the gate compares against the raw sources only")
            champion = None
    # the yardstick: baselines fitted on the same training stations, scored on the same held-out days
    train_keys = pd.concat([split.train, split.validation], ignore_index=True)
    baseline_columns, unfitted = add_baselines(samples, train_keys, frame, settings)
    for name, reason in unfitted.items():
        echo(f"warning: baseline {name} cannot be fitted on this run's training days ({reason}); "
             "the gate compares with the baselines that can")
    best = strongest(frame, baseline_columns)
    echo(f"strongest baseline on the held-out stations: {best[len('baseline_'):]}")
    references = {f"baseline {best[len('baseline_'):]}": best}
    if "champion" in models:
        references = {f"champion v{version}": "champion", **references}
    gate_comparisons = comparisons(frame, "fused", references, settings)
    metrics = summary_metrics(frame, models)
    metrics["heldout_rmse"] = metrics["heldout_fused_rmse"]
    metrics.update(interval_metrics(interval_table, calibration))
    for column in baseline_columns:
        metrics[f"heldout_{column}_rmse"] = float(score_table(frame, [column])["rmse"].iloc[0])
    for c in gate_comparisons:
        key = "champion" if c.reference.startswith("champion") else "baseline"
        metrics.update({f"gate_minus_{key}_rmse": c.diff, f"gate_minus_{key}_rmse_lo": c.lo,
                        f"gate_minus_{key}_rmse_hi": c.hi})
    for source in ("gleam", "modis"):
        metrics[f"heldout_fused_without_{source}_rmse"] = float(score_table(frame, [f"fused_without_{source}"])["rmse"].iloc[0])
    table = score_table(frame, models + [best])
    by_set = score_table(frame, models + [best], by="set")
    work = Path(work_dir or tempfile.mkdtemp(prefix="etfuse-train-"))
    figures = plots(frame, models, work / "plots")
    timings["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    onnx_path = work / "model.onnx"
    parity = export_onnx(result.model, onnx_path, window_days=settings.window_days, features=FEATURES,
                         parity_tiles=_parity_tiles(samples, keys, np.random.default_rng(settings.training.seed)),
                         metadata={"etfuse_version": __version__, "normalisation": norm,
                                   "interval_calibration": calibration.to_json()})
    tiles = _parity_tiles(samples, keys, np.random.default_rng(settings.training.seed + 1))
    serving_paths, serving_parity = export_serving_parts(result.model, work / "serving", window_days=settings.window_days,
                                                         n_features=len(FEATURES), parity_tiles=tiles)
    metrics["onnx_parity_max_abs_diff_mm"] = max(parity.max_abs_diff_mm, serving_parity.max_abs_diff_mm)
    timings["export"] = time.perf_counter() - t
    echo(f"ONNX export: parity {metrics['onnx_parity_max_abs_diff_mm']:.2g} mm on "
         f"{parity.cells_compared + serving_parity.cells_compared} cells (whole model and serving graphs); no scatter ops")

    # the training data's distribution: what ingest's drift checks compare new batches with
    from etfuse.quality.drift import default_stats_path, reference_stats_from_store, save_reference_stats
    t = time.perf_counter()
    reference = reference_stats_from_store(store, settings=settings, start=samples.days[0],
                                           end=split.temporal_start - pd.Timedelta(days=1))
    norm = {**norm, "reference_stats": reference}
    timings["reference_stats"] = time.perf_counter() - t

    version, decision = None, None
    if registry is None:
        save_reference_stats(reference, default_stats_path(settings))
    else:
        from training.registry import TrainingRecord
        t = time.perf_counter()
        example = batcher.batch(keys.iloc[:2])
        card_models = models + baseline_columns
        window = {"start": f"{samples.days[0]:%Y-%m-%d}", "end": f"{samples.days[-1]:%Y-%m-%d}",
                  "temporal_holdout_start": f"{split.temporal_start:%Y-%m-%d}",
                  "heldout_stations": ",".join(split.heldout_stations)}
        card = work / "model-card.md"
        card.write_text(model_card(
            settings=settings, data_window=window,
            params={**settings.training.model_dump(mode="json"), "window_days": settings.window_days,
                    "best_epoch": result.best_epoch},
            overall=score_table(frame, card_models), by_season=score_table(frame, card_models, by="season"),
            by_station=score_table(frame, card_models, by="station_id"), gate_comparisons=gate_comparisons,
            plots=[p.name for p in figures], code_version=code_version(), interval=interval_table,
            interval_note=(f"Half-widths of the raw 5/95 % quantiles scaled per season (factors "
                           f"{calibration.to_json()}), calibrated on the {calibrated_on} station-days; coverage "
                           "checked on the held-out station-days the calibration did not use.")))
        record = TrainingRecord(
            params={**settings.training.model_dump(mode="json"), "window_days": settings.window_days,
                    "features": ",".join(FEATURES), "best_epoch": result.best_epoch, "region": settings.region.name},
            metrics=metrics,
            tables={"heldout_overall": table, "heldout_by_set": by_set,
                    "heldout_by_station": score_table(frame, models, by="station_id"),
                    "heldout_by_season": score_table(frame, models, by="season"),
                    "interval_coverage": interval_table,
                    "training_history": pd.DataFrame(result.history)},
            plots=figures,
            data_window=window,
            input_fingerprints=samples.fingerprints,
            code_version=code_version(),
            settings_yaml=settings.to_yaml(),
            normalisation=norm,
            torch_model=result.model,
            torch_example=(example[0].cpu(), example[1].cpu()),
            onnx_path=onnx_path,
            onnx_example={k: v[:1] for k, v in zip(("x", "mask"), patch_tiles(samples, keys.iloc[:1]))},
            heldout=frame[["station_id", "date", "set"]].assign(date=frame["date"].dt.strftime("%Y-%m-%d")),
            extra_files=[*serving_paths.values(), card],
        )
        from training.registry import heldout_fingerprint
        info = registry.log_and_register(record)
        version = info.version
        decision = registry.gate(version, candidate_rmse=metrics["heldout_fused_rmse"],
                                 champion_rmse=metrics.get("heldout_champion_rmse"),
                                 gleam_rmse=metrics.get("heldout_gleam_rmse", float("nan")),
                                 era5land_rmse=metrics.get("heldout_era5land_rmse", float("nan")),
                                 actor=actor, heldout_sha256=heldout_fingerprint(record.heldout),
                                 candidate_predictions=frame["fused"].to_numpy(), comparisons=gate_comparisons)
        timings["register"] = time.perf_counter() - t
        if decision.promoted:
            save_reference_stats(reference, default_stats_path(settings))
            echo(f"drift reference statistics of the champion's training data -> {default_stats_path(settings)}")
    return TrainingOutcome(version, decision, metrics, table, by_set, result, onnx_path, timings)


def format_table(table: pd.DataFrame) -> str:
    """The metrics table a person reads: one row per model."""
    show = table.set_index("model")[["n", "rmse", "mae", "rb_percent", "cc", "kge"]]
    show.columns = ["n", "RMSE mm/d", "MAE mm/d", "RB %", "CC", "KGE"]
    return show.to_string(float_format=lambda v: f"{v:.2f}")


def save_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str))
