"""Training samples: windows of T days on station subgraphs, targets at station nodes only.

For each station cell, a ``(2r+1) x (2r+1)`` patch of target cells (r = ``training.patch_radius``,
at least the model's receptive field, so the station's output equals the whole-grid output) is
read for every day of the period.  A sample is (station, day D): features of days D-T+1..D on
the patch, target the station's observed ET of day D.

Splits: a share of stations is held out entirely (spatial), the final share of the period is held
out (temporal); the rest is training, of which a share is kept for early stopping.  The
normalisation statistics are computed on the training split only.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from etfuse.errors import EtfuseError
from etfuse.features import FEATURES, InputReader, assemble, elevation_on_grid
from etfuse.grid import TargetGrid
from etfuse.settings import Settings
from etfuse.store import HarmonisedStore


class NoTrainingDataError(EtfuseError):
    """Not enough stored inputs or station observations to train."""


@dataclass
class SampleSet:
    """Everything training and evaluation need, as arrays.

    ``features``: ``(stations, days, patch_cells, F)`` with every available source;
    ``lst_modis`` / ``lst_skt``: ``(stations, days, patch_cells)`` the two LST candidates, so that
    source dropout can replace MODIS by the skt fallback exactly as operations do;
    ``lst_skt_default``: skt plus the default offset, the fallback of a day with no MODIS file at
    all (nothing to measure the day's offset on), as before 2000 (None: use ``lst_skt``);
    ``targets``: ``(stations, days)`` observed ET [mm], NaN when missing.
    """

    features: np.ndarray
    lst_modis: np.ndarray
    lst_skt: np.ndarray
    targets: np.ndarray
    days: pd.DatetimeIndex
    stations: pd.DataFrame            # station_id, source, row, col, lat, lon
    patch_valid: np.ndarray           # (stations, patch_cells) inside the grid
    patch_size: int
    window_days: int
    fingerprints: dict[str, str] = field(default_factory=dict)
    lst_skt_default: np.ndarray | None = None

    @property
    def centre(self) -> int:
        return (self.patch_size * self.patch_size) // 2

    def keys(self) -> pd.DataFrame:
        """Every (station index, day index) with a target and a full window."""
        s, d = np.nonzero(np.isfinite(self.targets))
        keep = d >= self.window_days - 1
        return pd.DataFrame({"s": s[keep], "d": d[keep]})


@dataclass
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame
    spatial: pd.DataFrame            # held-out stations, training period
    temporal: pd.DataFrame           # training stations, final period
    heldout_stations: list[str]
    temporal_start: pd.Timestamp

    @property
    def heldout(self) -> pd.DataFrame:
        """Every station-day never used in training: the gate's evaluation set."""
        return pd.concat([self.spatial, self.temporal, self.heldout_late], ignore_index=True)

    heldout_late: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"s": [], "d": []}, dtype=int))


def station_targets(store: HarmonisedStore, settings: Settings, grid: TargetGrid, start=None, end=None) -> pd.DataFrame:
    """Observed station ET inside the grid, one row per (station, day); several sources allowed."""
    obs = store.read_stations(list(settings.training.target_sources), start, end)
    if obs.empty:
        raise NoTrainingDataError(f"no station observations from {list(settings.training.target_sources)} in "
                                  f"{store.root}; ingest CMA or station files first")
    rows, cols = grid.cell_of(obs["lat"].values, obs["lon"].values)
    obs = obs.assign(row=rows, col=cols)
    return obs[obs["row"] >= 0].reset_index(drop=True)


def build_samples(store: HarmonisedStore, settings: Settings, *, start=None, end=None,
                  reader: InputReader | None = None) -> SampleSet:
    """Read the harmonised store into a ``SampleSet`` over [start, end] (default: all stored days)."""
    grid = TargetGrid.from_region(settings.region)
    reader = reader or InputReader(store, settings, grid)
    obs = station_targets(store, settings, grid, start, end)
    era5_days = store.grid_days("era5land")
    if not era5_days:
        raise NoTrainingDataError(f"no ERA5-Land days in {store.root}; ERA5-Land is the one source every day needs")
    first = max(pd.Timestamp(start) if start else era5_days[0], era5_days[0], obs["date"].min())
    last = min(pd.Timestamp(end) if end else era5_days[-1], era5_days[-1], obs["date"].max())
    days = pd.date_range(first, last, freq="D")
    if len(days) < settings.window_days + 10:
        raise NoTrainingDataError(f"only {len(days)} days with both ERA5-Land and station data "
                                  f"({first:%Y-%m-%d}..{last:%Y-%m-%d}); need at least {settings.window_days + 10}")
    # one node per station location (a station that moved is a new location)
    stations = (obs.groupby(["station_id", "row", "col"], as_index=False)
                .agg(source=("source", "first"), lat=("lat", "first"), lon=("lon", "first")))
    r = settings.training.patch_radius
    offsets = np.arange(-r, r + 1)
    pr = stations["row"].to_numpy()[:, None, None] + offsets[None, :, None]
    pc = stations["col"].to_numpy()[:, None, None] + offsets[None, None, :]
    pr, pc = np.broadcast_arrays(pr, pc)
    size = 2 * r + 1
    rows = pr.reshape(len(stations), size * size)
    cols = pc.reshape(len(stations), size * size)
    valid = (rows >= 0) & (rows < grid.shape[0]) & (cols >= 0) & (cols < grid.shape[1])
    raw = reader.at_cells(days, rows, cols)                         # arrays (days, stations, P)
    safe_r, safe_c = np.clip(rows, 0, grid.shape[0] - 1), np.clip(cols, 0, grid.shape[1] - 1)
    lat = np.where(valid, grid.lat[safe_r], np.nan).astype(np.float32)
    lon = np.where(valid, grid.lon[safe_c], np.nan).astype(np.float32)
    dem = elevation_on_grid(settings, grid, reader.cache)
    elevation = None if dem is None else np.where(valid, dem[safe_r, safe_c], np.nan)
    features = assemble(raw, lat=lat, lon=lon, elevation=elevation)   # (days, stations, P, F)
    lst_skt = np.where(np.isfinite(raw.values["skt"]), raw.values["skt"] + raw.lst_offset_k[:, None, None], np.nan)
    # a day without any MODIS file has no overlap to measure the offset on: operations (and the
    # pre-2000 archive) use the default offset, so training's "MODIS did not arrive" does too
    lst_skt_default = np.where(np.isfinite(raw.values["skt"]),
                               raw.values["skt"] + settings.lst.fallback_default_offset_k, np.nan).astype(np.float32)
    # targets: mean of the observations of a location on a day (several sources may observe it)
    key = {(sid, rr, cc): k for k, (sid, rr, cc) in enumerate(zip(stations["station_id"], stations["row"], stations["col"]))}
    targets = np.full((len(stations), len(days)), np.nan, dtype=np.float32)
    day_index = {d: k for k, d in enumerate(days)}
    grouped = obs.groupby(["station_id", "row", "col", "date"], as_index=False)["et_mm"].mean()
    for rec in grouped.itertuples(index=False):
        k = day_index.get(pd.Timestamp(rec.date))
        if k is not None:
            targets[key[(rec.station_id, rec.row, rec.col)], k] = rec.et_mm
    fingerprints = reader.fingerprints() if hasattr(reader, "fingerprints") else {}
    fingerprints["stations"] = hashlib.sha256(
        grouped.sort_values(["station_id", "date"]).to_csv(index=False).encode()).hexdigest()
    swap = lambda a: np.ascontiguousarray(np.swapaxes(a, 0, 1))  # noqa: E731  (days, st, ...) -> (st, days, ...)
    return SampleSet(features=swap(features), lst_modis=swap(raw.values["lst_modis"]), lst_skt=swap(lst_skt),
                     lst_skt_default=swap(lst_skt_default), targets=targets, days=days, stations=stations, patch_valid=valid, patch_size=size,
                     window_days=settings.window_days, fingerprints=fingerprints)


def split_samples(samples: SampleSet, settings: Settings) -> Split:
    """Spatial and temporal hold-outs and an early-stopping share, deterministic for the seed."""
    cfg = settings.training
    rng = np.random.default_rng(cfg.seed)
    keys = samples.keys()
    if keys.empty:
        raise NoTrainingDataError("no station-day has both a target and a full input window")
    ids = sorted(samples.stations["station_id"].unique())
    n_out = max(1, int(round(cfg.heldout_station_fraction * len(ids))))
    if len(ids) - n_out < 1:
        raise NoTrainingDataError(f"{len(ids)} station(s): too few to hold any out and still train")
    heldout = sorted(rng.choice(ids, size=n_out, replace=False).tolist())
    out_idx = set(np.flatnonzero(samples.stations["station_id"].isin(heldout)))
    t0 = int(round(len(samples.days) * (1 - cfg.temporal_holdout_fraction)))
    late = keys["d"] >= t0
    is_out = keys["s"].isin(out_idx)
    train_all = keys[~is_out & ~late].reset_index(drop=True)
    order = rng.permutation(len(train_all))
    n_val = max(1, int(round(cfg.validation_fraction * len(train_all))))
    return Split(train=train_all.iloc[np.sort(order[n_val:])].reset_index(drop=True),
                 validation=train_all.iloc[np.sort(order[:n_val])].reset_index(drop=True),
                 spatial=keys[is_out & ~late].reset_index(drop=True),
                 temporal=keys[~is_out & late].reset_index(drop=True),
                 heldout_late=keys[is_out & late].reset_index(drop=True),
                 heldout_stations=heldout, temporal_start=samples.days[t0] if t0 < len(samples.days) else samples.days[-1])


def normalisation(samples: SampleSet, split: Split) -> dict:
    """Per-feature mean and standard deviation over the training windows only (NaN ignored)."""
    days = sorted({d - k for d in split.train["d"].unique() for k in range(samples.window_days)})
    st = sorted(split.train["s"].unique())
    block = samples.features[np.ix_(st, days)]                   # (st, days, P, F)
    flat = block.reshape(-1, block.shape[-1]).astype(np.float64)
    with warnings.catch_warnings():            # a feature with no value at all (no elevation file): 0 and 1 below
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(flat, axis=0)
        std = np.nanstd(flat, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 1e-6), std, 1.0)
    return {"features": list(FEATURES), "mean": mean.tolist(), "std": std.tolist(),
            "train_days": [f"{samples.days[min(days)]:%Y-%m-%d}", f"{samples.days[max(days)]:%Y-%m-%d}"],
            "train_stations": [str(samples.stations['station_id'].iloc[i]) for i in st]}


def to_json(obj: dict) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
