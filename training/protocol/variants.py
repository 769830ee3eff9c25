"""The GCN-GRU and its ablations as transformations of a ``SampleSet``, trained per fold.

* ``gcn_gru``: the model as operations train it;
* ``no_graph``: only the station's own cell is valid in each patch, so the graph has no edges and
  each GCN layer reduces to a per-cell layer (with its self loop): the same model without space;
* ``no_gru``: a window of one day, so the GRU sees a single step: no memory;
* ``without_<source>``: the source removed from every sample, in training and in testing, exactly
  as operations see a missing source (MODIS -> ERA5-Land skt fallback, ERA5-Land -> no fallback).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from etfuse.settings import Settings
from training.samples import SampleSet, Split, normalisation
from training.train import PatchBatcher, fit, predict

VARIANTS = ("gcn_gru", "no_graph", "no_gru", "without_gleam", "without_era5land", "without_modis")


def variant_samples(samples: SampleSet, variant: str) -> SampleSet:
    """The ``SampleSet`` a variant trains and predicts on (the targets are never changed)."""
    if variant == "gcn_gru":
        return samples
    if variant == "no_graph":
        valid = np.zeros_like(samples.patch_valid)
        valid[:, samples.centre] = True
        return replace(samples, patch_valid=valid)
    if variant == "no_gru":
        return replace(samples, window_days=1)
    if variant.startswith("without_"):
        source = variant[len("without_"):]
        n = len(samples.stations)
        features = PatchBatcher.drop_sources(samples.features, samples.lst_modis, samples.lst_skt,
                                             {source: np.ones(n, bool)}, samples.lst_skt_default)
        lst_modis = np.full_like(samples.lst_modis, np.nan) if source == "modis" else samples.lst_modis
        lst_skt = np.full_like(samples.lst_skt, np.nan) if source == "era5land" else samples.lst_skt
        return replace(samples, features=features, lst_modis=lst_modis, lst_skt=lst_skt)
    raise ValueError(f"unknown model variant {variant!r}; expected one of {VARIANTS}")


def cv_settings(settings: Settings, variant: str):
    """Training settings inside cross-validation: ``evaluation.cv_epochs/cv_patience``, and no
    random dropout of a source the variant has removed anyway."""
    cfg = settings.evaluation
    update = {"epochs": cfg.cv_epochs or settings.training.epochs,
              "patience": cfg.cv_patience or settings.training.patience}
    if variant.startswith("without_"):
        update[f"dropout_{variant[len('without_'):]}"] = 0.0
    return settings.model_copy(update={"training": settings.training.model_copy(update=update)})


def fit_and_predict(samples: SampleSet, variant: str, train: pd.DataFrame, validation: pd.DataFrame,
                    test: pd.DataFrame, settings: Settings, *, test_samples: SampleSet | None = None
                    ) -> tuple[np.ndarray, dict, object]:
    """Train ``variant`` on ``train`` (early stopping on ``validation``), predict ``test`` keys.

    ``test_samples`` (default ``samples``) is where the test keys point: the final test uses the
    full ``SampleSet`` while training only ever sees the development one.  Returns the
    predictions ``(n, 3)`` (ET and the raw 5 % / 95 % quantiles), a record of the fit and the
    trained model.
    """
    local = variant_samples(samples, variant)
    split = Split(train=train, validation=validation, spatial=test.iloc[:0], temporal=test.iloc[:0],
                  heldout_stations=[], temporal_start=samples.days[-1])
    norm = normalisation(local, split)
    t0 = time.perf_counter()
    result = fit(local, split, norm, cv_settings(settings, variant))
    seconds = time.perf_counter() - t0
    target = variant_samples(test_samples, variant) if test_samples is not None else local
    pred = predict(result.model, PatchBatcher(target, torch.device("cpu")), test, interval=True)
    return pred.astype(np.float64), {"variant": variant, "seconds": seconds, "best_epoch": result.best_epoch,
                                     "epochs_run": len(result.history)}, result.model
