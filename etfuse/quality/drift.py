"""Reference statistics of the training data, and the drift expectations built from them.

A model trained on some period expects inputs like those it saw.  When training data are chosen,
``compute_reference_stats`` records per source, variable and calendar month the ``mean``, ``std``,
quantiles ``p01``/``p50``/``p99`` and ``count`` of the harmonised values (grid cells inside the
region, station rows); ``save_reference_stats`` writes them as JSON.  Each incoming batch is then
checked against its month: the batch mean must lie within ``mean +- quality.drift_k * std``
(severity warning: the data are accepted, somebody looks).  Without recorded statistics the drift
checks are skipped and reported as info "no reference statistics".

JSON format (``format`` = ``etfuse-reference-stats/1``)::

    {"format": "etfuse-reference-stats/1", "created": "2026-11-24T10:00:00Z",
     "region": {"lon_min": ..., "lon_max": ..., "lat_min": ..., "lat_max": ...},
     "period": {"start": "2003-01-01", "end": "2018-12-31"},
     "sources": {"era5land": {"et": {"6": {"mean": 2.1, "std": 1.3, "p01": 0.1, "p50": 1.9,
                                           "p99": 6.0, "count": 3650000}, ...}, ...}, ...}}

Mean, std and count use every value (float64 sums); quantiles come from a systematic sample of at
most ``quality.drift_quantile_sample`` values per source, variable and month.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.clock import utcnow_iso
from etfuse.quality.expectations import Skipped, column, expectation
from etfuse.quality.frames import SOURCES, Frames, region_values, source_spec
from etfuse.settings import Settings
from etfuse.tempfiles import write_atomic

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

    from etfuse.store import HarmonisedStore

STATS_FORMAT = "etfuse-reference-stats/1"
#: variables whose distribution is recorded and checked, per source
DRIFT_VARIABLES: dict[str, tuple[str, ...]] = {
    "era5land": ("et", "net_radiation", "skt"),
    "gleam": ("et",),
    "modis": ("lst",),
    "cma": ("et",),
    "stations": ("et",),
    "fluxnet": ("et",),
}
STAT_KEYS = ("mean", "std", "p01", "p50", "p99", "count")


class ReferenceStatsError(ValueError):
    """A reference statistics file that cannot be used; names the file, what was expected and found."""


# --------------------------------------------------------------------------- accumulating
@dataclass
class _Moments:
    count: int = 0
    total: float = 0.0
    squares: float = 0.0
    sample: list[np.ndarray] = field(default_factory=list)
    sample_size: int = 0
    stride: int = 1
    offset: int = 0

    def add(self, values: np.ndarray, cap: int) -> None:
        values = values[np.isfinite(values)].astype(np.float64, copy=False)
        if values.size == 0:
            return
        self.count += values.size
        self.total += float(values.sum())
        self.squares += float(np.square(values).sum())
        # systematic sample: every stride-th value across the stream; halve when over the cap
        start = (-self.offset) % self.stride
        picked = values[start::self.stride]
        self.offset = (self.offset + values.size) % self.stride
        self.sample.append(picked)
        self.sample_size += picked.size
        while self.sample_size > cap:
            merged = np.concatenate(self.sample)[::2]
            self.sample, self.sample_size = [merged], merged.size
            self.stride *= 2

    def stats(self) -> dict[str, float | int]:
        mean = self.total / self.count
        var = max(self.squares / self.count - mean * mean, 0.0)
        sample = np.concatenate(self.sample) if self.sample else np.array([mean])
        p01, p50, p99 = np.quantile(sample, [0.01, 0.5, 0.99])
        return {"mean": mean, "std": float(np.sqrt(var)), "p01": float(p01), "p50": float(p50),
                "p99": float(p99), "count": int(self.count)}


class StatsAccumulator:
    """Streams harmonised batches (grids day by day, or station frames) into month statistics."""

    def __init__(self, *, settings: Settings) -> None:
        self.settings = settings
        self.cap = int(settings.quality.drift_quantile_sample)
        self._moments: dict[tuple[str, str, int], _Moments] = {}
        self.first: date | None = None
        self.last: date | None = None

    def _add(self, source: str, variable: str, month: int, values: np.ndarray) -> None:
        self._moments.setdefault((source, variable, int(month)), _Moments()).add(values, self.cap)

    def _span(self, days: Iterable[pd.Timestamp]) -> None:
        for day in days:
            d = pd.Timestamp(day).date()
            self.first = d if self.first is None or d < self.first else self.first
            self.last = d if self.last is None or d > self.last else self.last

    def add_grid(self, source: str, ds: xr.Dataset) -> None:
        """A gridded harmonised dataset (reader output or stored days): region cells only."""
        times = pd.DatetimeIndex(np.atleast_1d(ds["time"].values))
        self._span(times)
        for variable in DRIFT_VARIABLES[source]:
            values = region_values(ds, variable, self.settings.region)
            if values is None:
                continue
            flag = f"has_{variable}"
            keep = np.asarray(ds[flag].values, dtype=bool) if flag in ds.coords and ds[flag].dims == ("time",) \
                else np.ones(len(times), dtype=bool)
            for month in np.unique(times.month[keep]):
                pick = keep & (times.month == month)
                self._add(source, variable, int(month), values[pick].reshape(-1))

    def add_stations(self, source: str, ds_or_frame: xr.Dataset | pd.DataFrame) -> None:
        """Station rows: a reader's ``obs`` dataset, or a store frame with ``date``/``time`` and ``et``/``et_mm``."""
        if isinstance(ds_or_frame, xr.Dataset):
            times = pd.DatetimeIndex(ds_or_frame["time"].values)
            et = np.asarray(ds_or_frame["et"].values, dtype=np.float64)
        else:
            frame = ds_or_frame
            times = pd.DatetimeIndex(frame["time"] if "time" in frame else frame["date"])
            et = frame["et"].to_numpy(dtype=np.float64) if "et" in frame else frame["et_mm"].to_numpy(dtype=np.float64)
        self._span(times)
        for month in np.unique(times.month):
            self._add(source, "et", int(month), et[times.month == month])

    def add(self, source: str, data: xr.Dataset | pd.DataFrame) -> None:
        if source_spec(source).kind == "grid":
            self.add_grid(source, data)            # type: ignore[arg-type]
        else:
            self.add_stations(source, data)

    def result(self) -> dict:
        region = self.settings.region
        sources: dict[str, dict[str, dict[str, dict]]] = {}
        for (source, variable, month), moments in sorted(self._moments.items()):
            sources.setdefault(source, {}).setdefault(variable, {})[str(month)] = moments.stats()
        return {"format": STATS_FORMAT,
                "created": utcnow_iso(),
                "region": {"name": region.name, "lon_min": region.lon_min, "lon_max": region.lon_max,
                           "lat_min": region.lat_min, "lat_max": region.lat_max},
                "period": {"start": self.first.isoformat() if self.first else None,
                           "end": self.last.isoformat() if self.last else None},
                "sources": sources}


def compute_reference_stats(data: Mapping[str, xr.Dataset | pd.DataFrame | Iterable[xr.Dataset | pd.DataFrame]],
                            *, settings: Settings) -> dict:
    """Month statistics from harmonised data: ``{source: dataset | frame | iterable of them}``.

    Pass an iterable (e.g. a generator of stored days) to keep memory bounded over long periods.
    """
    acc = StatsAccumulator(settings=settings)
    for source, items in data.items():
        source_spec(source)
        if isinstance(items, (xr.Dataset, pd.DataFrame)):
            items = [items]
        for item in items:
            acc.add(source, item)
    return acc.result()


def reference_stats_from_store(store: "HarmonisedStore", *, settings: Settings, sources: Iterable[str] | None = None,
                               start: date | str | None = None, end: date | str | None = None) -> dict:
    """Month statistics of the stored harmonised days of ``sources`` in ``[start, end]`` (day by day)."""
    acc = StatsAccumulator(settings=settings)
    for source in sources if sources is not None else SOURCES:
        if source_spec(source).kind == "grid":
            for day in store.grid_days(source):
                if (start is None or day >= pd.Timestamp(start)) and (end is None or day <= pd.Timestamp(end)):
                    ds = store.read_grid_day(source, day)
                    if ds is not None:
                        acc.add_grid(source, ds)
        else:
            frame = store.read_stations(source, start, end)
            if not frame.empty:
                acc.add_stations(source, frame)
    return acc.result()


# --------------------------------------------------------------------------- files
def default_stats_path(settings: Settings) -> Path:
    """``quality.reference_stats_file`` or ``$ETFUSE_HOME/harmonised/reference_stats.json``."""
    configured = settings.quality.reference_stats_file
    return Path(configured) if configured is not None else settings.harmonised / "reference_stats.json"


def save_reference_stats(stats: Mapping, path: Path | str) -> Path:
    """Write the statistics as JSON (temporary name, then rename: readers never see half a file)."""
    _check_format(stats, Path(path))
    path = Path(path)
    return write_atomic(path, json.dumps(stats, indent=1, sort_keys=True))


def load_reference_stats(path: Path | str) -> dict | None:
    """The statistics saved at ``path``; None when no file was recorded yet."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReferenceStatsError(f"{path}: not readable as JSON ({exc}); expected {STATS_FORMAT}") from exc
    _check_format(stats, path)
    return stats


def _check_format(stats: Mapping, path: Path) -> None:
    if not isinstance(stats, Mapping) or stats.get("format") != STATS_FORMAT:
        found = stats.get("format") if isinstance(stats, Mapping) else type(stats).__name__
        raise ReferenceStatsError(f"{path}: expected format {STATS_FORMAT!r}, found {found!r}")
    for source, variables in stats.get("sources", {}).items():
        for variable, months in variables.items():
            for month, entry in months.items():
                missing = [k for k in STAT_KEYS if k not in entry]
                if missing or not month.isdigit() or not 1 <= int(month) <= 12:
                    raise ReferenceStatsError(f"{path}: sources.{source}.{variable}.{month}: expected month 1-12 "
                                              f"with {', '.join(STAT_KEYS)}, found keys {sorted(entry)}")


def month_stats(stats: Mapping | None, source: str, variable: str, month: int) -> dict | None:
    if not stats:
        return None
    return stats.get("sources", {}).get(source, {}).get(variable, {}).get(str(int(month)))


# --------------------------------------------------------------------------- expectations
def drift_expectations(frames: Frames, stats: Mapping | None, *, settings: Settings,
                       frame: str) -> tuple[list["Expectation"], list["Skipped"]]:
    """Batch mean within reference mean +- k * std of the same month, per variable and month (warning)."""
    q = settings.quality
    variables = [v for v in DRIFT_VARIABLES.get(frames.source, ()) if v in frames.variables]
    if not variables:
        return [], []
    if not stats:
        return [], [Skipped(f"drift_{v}", frame, "no reference statistics") for v in variables]
    table = frames[frame]
    expectations, skipped = [], []
    several = len(frames.months) > 1
    for variable in variables:
        for month in frames.months:
            entry = month_stats(stats, frames.source, variable, month)
            check = f"drift_{variable}"
            if entry is None:
                skipped.append(Skipped(check, frame, f"no reference statistics for month {month}"))
                continue
            if entry["count"] < q.drift_min_count:
                skipped.append(Skipped(check, frame, f"reference statistics for month {month} come from "
                                                     f"{entry['count']} values (< quality.drift_min_count "
                                                     f"{q.drift_min_count})"))
                continue
            values = table.loc[table["month"] == month, variable] if several else table[variable]
            if not np.isfinite(values.to_numpy(dtype=np.float64)).any():
                skipped.append(Skipped(check, frame, f"no {variable} values in month {month}"))
                continue
            low = float(entry["mean"] - q.drift_k * entry["std"])
            high = float(entry["mean"] + q.drift_k * entry["std"])
            expectations.append(expectation(
                "ExpectColumnMeanToBeBetween", check, "warning",
                f"The batch mean of {variable} in month {month} must lie within the training data's "
                f"mean {entry['mean']:.3g} +- quality.drift_k ({q.drift_k:g}) x std {entry['std']:.3g}.",
                column=variable, min_value=low, max_value=high,
                row_condition=column("month") == int(month) if several else None))
    return expectations, skipped
