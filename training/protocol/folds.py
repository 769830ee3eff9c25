"""Spatial blocks of stations, k folds over blocks, and the final test set.

Why blocks: the sources' errors are correlated over 50-150 km, so a station next to a training
station is not an independent test of skill away from stations.  Stations are grouped into square
blocks ``evaluation.block_km`` wide (at least the error correlation length) and whole blocks are
assigned to folds.

The final test set (stations of some blocks, and a final period for every station) is removed
*by construction*: :func:`development_samples` returns a new ``SampleSet`` that holds neither
final-test stations nor final-test days, and the folds, baselines, early stopping and the gate
are only ever given that object.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from etfuse.errors import EtfuseError
from etfuse.settings import Settings
from training.samples import SampleSet

#: length of one degree of latitude [km]
KM_PER_DEG = 111.2


class ProtocolError(EtfuseError):
    """The evaluation protocol cannot be set up on these samples (too few stations or days)."""


@dataclass(frozen=True)
class FinalTest:
    """The final test set: whole stations, and every station from ``start`` on."""

    stations: tuple[str, ...]
    start: pd.Timestamp


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold over a development ``SampleSet``: keys are (s, d) rows."""

    index: int
    train: pd.DataFrame
    validation: pd.DataFrame           # early stopping: a share of the training stations' days
    test: pd.DataFrame                 # every station-day of the fold's held-out blocks
    test_stations: tuple[str, ...]


def station_blocks(lat: np.ndarray, lon: np.ndarray, block_km: float) -> np.ndarray:
    """Block id of each station: squares of ``block_km`` on a local equirectangular plane."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    y = (lat - lat.min()) * KM_PER_DEG
    x = (lon - lon.min()) * KM_PER_DEG * np.cos(np.deg2rad(lat.mean()))
    ix, iy = np.floor(x / block_km).astype(int), np.floor(y / block_km).astype(int)
    _, ids = np.unique(iy * 100_000 + ix, return_inverse=True)
    return ids.astype(int)


def assign_folds(blocks: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold of each station: whole blocks, shuffled, each to the fold with the fewest stations so far.

    With fewer blocks than ``k`` the number of folds is the number of blocks (each block one fold).
    """
    blocks = np.asarray(blocks)
    ids, counts = np.unique(blocks, return_counts=True)
    k = min(k, len(ids))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    order = order[np.argsort(-counts[order], kind="stable")]          # big blocks first, ties random
    load = np.zeros(k, int)
    fold_of_block = {}
    for i in order:
        f = int(np.argmin(load))
        fold_of_block[ids[i]] = f
        load[f] += counts[i]
    return np.array([fold_of_block[b] for b in blocks], dtype=int)


def station_table(samples: SampleSet, block_km: float) -> pd.DataFrame:
    """One row per station location: id, lat, lon, block."""
    table = samples.stations[["station_id", "lat", "lon"]].copy().reset_index(drop=True)
    table["block"] = station_blocks(table["lat"].to_numpy(), table["lon"].to_numpy(), block_km)
    return table


def final_test(samples: SampleSet, settings: Settings) -> FinalTest:
    """The final test set declared in settings (explicit stations/date, or shares drawn with the seed)."""
    cfg = settings.evaluation
    table = station_table(samples, cfg.block_km)
    known = set(table["station_id"])
    if cfg.final_test_stations:
        unknown = sorted(set(cfg.final_test_stations) - known)
        if unknown:
            raise ProtocolError(f"evaluation.final_test_stations names stations that have no samples: {unknown}; "
                                f"known: {sorted(known)[:20]}")
        stations = tuple(sorted(cfg.final_test_stations))
    elif cfg.final_test_fraction > 0:
        blocks = np.unique(table["block"])
        rng = np.random.default_rng(cfg.seed + 1)
        n = max(1, int(round(cfg.final_test_fraction * len(blocks))))
        if n >= len(blocks):
            raise ProtocolError(f"only {len(blocks)} spatial block(s) of {cfg.block_km:g} km: too few to keep "
                                f"{cfg.final_test_fraction:.0%} for the final test and cross-validate the rest")
        chosen = set(rng.choice(blocks, size=n, replace=False).tolist())
        stations = tuple(sorted(set(table.loc[table["block"].isin(chosen), "station_id"])))
    else:
        stations = ()
    if cfg.final_test_start is not None:
        start = pd.Timestamp(cfg.final_test_start)
    else:
        t0 = int(round(len(samples.days) * (1 - cfg.final_test_period_fraction)))
        start = samples.days[min(t0, len(samples.days) - 1)] if cfg.final_test_period_fraction > 0 \
            else samples.days[-1] + pd.Timedelta(days=1)
    return FinalTest(stations=stations, start=start)


def development_samples(samples: SampleSet, final: FinalTest) -> SampleSet:
    """A new ``SampleSet`` without the final test: its stations dropped, its days cut off.

    Everything the cross-validation, the baselines, early stopping and the gate see comes from
    this object, so no final-test station or day can reach them.
    """
    keep_st = np.flatnonzero(~samples.stations["station_id"].isin(final.stations).to_numpy())
    n_days = int(np.searchsorted(samples.days, final.start))
    if len(keep_st) < 2 or n_days < samples.window_days + 10:
        raise ProtocolError(f"after removing the final test ({len(final.stations)} stations, days from "
                            f"{final.start:%Y-%m-%d}) {len(keep_st)} station(s) x {n_days} day(s) remain; "
                            "need at least 2 stations and window + 10 days")
    return replace(samples, features=samples.features[keep_st, :n_days], lst_modis=samples.lst_modis[keep_st, :n_days],
                   lst_skt=samples.lst_skt[keep_st, :n_days], targets=samples.targets[keep_st, :n_days].copy(),
                   days=samples.days[:n_days], stations=samples.stations.iloc[keep_st].reset_index(drop=True),
                   patch_valid=samples.patch_valid[keep_st])


def final_test_keys(samples: SampleSet, final: FinalTest) -> pd.DataFrame:
    """Keys (s, d) of the full ``SampleSet`` in the final test: final stations, or days from ``start``."""
    keys = samples.keys()
    final_st = samples.stations["station_id"].isin(final.stations).to_numpy()
    late = samples.days[keys["d"].to_numpy()] >= final.start
    return keys[final_st[keys["s"].to_numpy()] | late].reset_index(drop=True)


def make_folds(dev: SampleSet, settings: Settings) -> list[Fold]:
    """k folds of whole spatial blocks over the development samples, early-stopping share drawn per fold."""
    cfg = settings.evaluation
    table = station_table(dev, cfg.block_km)
    fold_of = assign_folds(table["block"].to_numpy(), cfg.folds, cfg.seed)
    keys = dev.keys()
    if keys.empty:
        raise ProtocolError("no development station-day has both a target and a full input window")
    rng = np.random.default_rng(cfg.seed + 2)
    folds = []
    for f in range(int(fold_of.max()) + 1):
        test_idx = np.flatnonzero(fold_of == f)
        is_test = np.isin(keys["s"].to_numpy(), test_idx)
        train_all = keys[~is_test].reset_index(drop=True)
        order = rng.permutation(len(train_all))
        n_val = max(1, int(round(settings.training.validation_fraction * len(train_all))))
        folds.append(Fold(index=f, train=train_all.iloc[np.sort(order[n_val:])].reset_index(drop=True),
                          validation=train_all.iloc[np.sort(order[:n_val])].reset_index(drop=True),
                          test=keys[is_test].reset_index(drop=True),
                          test_stations=tuple(table["station_id"].iloc[test_idx])))
    return folds
