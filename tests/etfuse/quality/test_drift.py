"""Reference statistics (format, computing, files) and the drift checks built from them."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from etfuse.cf import annotate
from etfuse.quality import ValidationContext, validate
from etfuse.quality.drift import (STATS_FORMAT, ReferenceStatsError, compute_reference_stats, default_stats_path,
                                  drift_expectations, load_reference_stats, month_stats, reference_stats_from_store,
                                  save_reference_stats)
from etfuse.quality.frames import build_frames, region_cells
from etfuse.store import HarmonisedStore

TODAY = date(2022, 1, 1)


@pytest.fixture
def qs(settings):
    return settings.model_copy(update={"quality": settings.quality.model_copy(
        update={"write_reports": False, "drift_min_count": 10})})


def gleam(settings, days, value=None, seed=0) -> xr.Dataset:
    r, m, res = settings.region, settings.region.margin_deg, 0.25
    lat = np.round(np.arange(np.ceil((r.lat_max + m) / res) * res - res / 2, r.lat_min - m - res / 2, -res), 6)
    lon = np.round(np.arange(np.floor((r.lon_min - m) / res) * res + res / 2, r.lon_max + m + res / 2, res), 6)
    rng = np.random.default_rng(seed)
    values = (3.0 + rng.standard_normal((len(days), lat.size, lon.size))).astype(np.float32)
    if value is not None:
        values[:] = value
    ds = xr.Dataset({"et": (("time", "lat", "lon"), values)},
                    coords={"time": pd.DatetimeIndex(days), "lat": lat, "lon": lon})
    return annotate(ds, source="gleam")


def region_values(ds, settings, variable="et"):
    rows, cols = region_cells(ds, settings.region)
    return ds[variable].values[:, rows][:, :, cols].astype(np.float64)


# --------------------------------------------------------------------------- computing
def test_stats_per_month_over_region_cells(qs):
    ds = gleam(qs, pd.date_range("2021-06-25", "2021-07-05"))
    ds["et"][:, 0, 0] = 1000.0                                      # margin cell: not part of the statistics
    stats = compute_reference_stats({"gleam": ds}, settings=qs)
    assert stats["format"] == STATS_FORMAT and stats["period"] == {"start": "2021-06-25", "end": "2021-07-05"}
    values = region_values(ds, qs)
    june = values[:6].reshape(-1)
    entry = month_stats(stats, "gleam", "et", 6)
    assert entry["count"] == june.size
    assert entry["mean"] == pytest.approx(june.mean()) and entry["std"] == pytest.approx(june.std(), rel=1e-6)
    assert entry["p01"] == pytest.approx(np.quantile(june, 0.01))
    assert entry["p50"] == pytest.approx(np.median(june)) and entry["p99"] == pytest.approx(np.quantile(june, 0.99))
    assert month_stats(stats, "gleam", "et", 7)["count"] == values[6:].size
    assert month_stats(stats, "gleam", "et", 8) is None


def test_incomplete_era5_days_and_streams_of_days(qs):
    ds = gleam(qs, ["2021-06-01", "2021-06-02"]).assign_coords(has_et=("time", [True, False]))
    ds["et"][1] = 99.0
    stats = compute_reference_stats({"era5land": iter([ds])}, settings=qs)     # an iterable (e.g. stored days)
    entry = month_stats(stats, "era5land", "et", 6)
    assert entry["count"] == region_values(ds, qs)[0].size and entry["mean"] < 10


def test_quantile_sample_is_capped_but_moments_exact(qs):
    capped = qs.model_copy(update={"quality": qs.quality.model_copy(update={"drift_quantile_sample": 1000})})
    days = pd.date_range("2021-06-01", "2021-06-30")
    parts = [gleam(capped, [d], seed=k) for k, d in enumerate(days)]
    stats = compute_reference_stats({"gleam": parts}, settings=capped)
    everything = np.concatenate([region_values(p, capped).reshape(-1) for p in parts])
    entry = month_stats(stats, "gleam", "et", 6)
    assert entry["count"] == everything.size > 1000
    assert entry["mean"] == pytest.approx(everything.mean())
    assert entry["p50"] == pytest.approx(np.median(everything), abs=0.15)
    assert entry["p99"] == pytest.approx(np.quantile(everything, 0.99), abs=0.4)


def test_station_stats(qs):
    frame = pd.DataFrame({"station_id": ["52866"] * 4, "date": pd.to_datetime(["2021-06-01", "2021-06-02", "2021-07-01",
                                                                              "2021-07-02"]),
                          "et_mm": [1.0, 3.0, np.nan, 5.0]})
    stats = compute_reference_stats({"cma": frame}, settings=qs)
    assert month_stats(stats, "cma", "et", 6)["mean"] == 2.0 and month_stats(stats, "cma", "et", 7)["count"] == 1


def test_stats_from_the_store(qs, tmp_path):
    store = HarmonisedStore(tmp_path / "harmonised")
    ds = gleam(qs, ["2021-06-01", "2021-06-02", "2021-07-01"])
    store.put_grid("gleam", ds)
    stats = reference_stats_from_store(store, settings=qs, sources=["gleam"], end="2021-06-30")
    assert month_stats(stats, "gleam", "et", 6)["count"] == region_values(ds, qs)[:2].size
    assert month_stats(stats, "gleam", "et", 7) is None


# --------------------------------------------------------------------------- files
def test_save_and_load(qs, tmp_path):
    stats = compute_reference_stats({"gleam": gleam(qs, ["2021-06-01"])}, settings=qs)
    path = save_reference_stats(stats, tmp_path / "stats" / "reference_stats.json")
    assert load_reference_stats(path) == json.loads(path.read_text())
    assert load_reference_stats(tmp_path / "none.json") is None
    assert default_stats_path(qs) == qs.harmonised / "reference_stats.json"


def test_malformed_stats_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(ReferenceStatsError, match=r"bad\.json.*expected format 'etfuse-reference-stats/1'.*other/9"):
        load_reference_stats(bad)
    bad.write_text(json.dumps({"format": STATS_FORMAT, "sources": {"gleam": {"et": {"13": {"mean": 1}}}}}))
    with pytest.raises(ReferenceStatsError, match=r"sources\.gleam\.et\.13"):
        load_reference_stats(bad)


# --------------------------------------------------------------------------- drift checks
def _stats(mean: float, std: float = 0.5, count: int = 5000, months=(6, 7)) -> dict:
    entry = {"mean": mean, "std": std, "p01": mean - 2, "p50": mean, "p99": mean + 2, "count": count}
    return {"format": STATS_FORMAT, "sources": {"gleam": {"et": {str(m): dict(entry) for m in months}}}}


def test_drift_expectations_per_month(qs):
    frames = build_frames("gleam", gleam(qs, ["2021-06-30", "2021-07-01"]), settings=qs)
    expectations, skipped = drift_expectations(frames, _stats(3.0, months=(6,)), settings=qs, frame="cells")
    assert len(expectations) == 1 and expectations[0].meta["severity"] == "warning"
    assert expectations[0].min_value == pytest.approx(3.0 - qs.quality.drift_k * 0.5)
    assert expectations[0].row_condition is not None                         # two months in the batch
    assert [s.reason for s in skipped] == ["no reference statistics for month 7"]
    _, few = drift_expectations(frames, _stats(3.0, count=5), settings=qs, frame="cells")
    assert all("drift_min_count" in s.reason for s in few) and len(few) == 2


def test_drift_both_ways(qs):
    ds = gleam(qs, ["2021-06-01", "2021-06-02"])
    near = validate("gleam", ds, settings=qs, context=ValidationContext(today=TODAY, reference_stats=_stats(3.0)))
    ok = [o for o in near.outcomes if o.check == "drift_et"]
    assert len(ok) == 1 and ok[0].success and ok[0].expectation == "expect_column_mean_to_be_between"

    far = validate("gleam", ds, settings=qs, context=ValidationContext(today=TODAY, reference_stats=_stats(9.0)))
    assert far.accepted
    drift = next(o for o in far.warnings if o.check == "drift_et")
    assert drift.severity == "warning" and drift.observed["observed_value"] == pytest.approx(3.0, abs=0.2)
    assert drift.expected == {"min_value": pytest.approx(7.5), "max_value": pytest.approx(10.5)}

    none = validate("gleam", ds, settings=qs, context=ValidationContext(today=TODAY))
    skipped = next(o for o in none.outcomes if o.check == "drift_et")
    assert skipped.severity == "info" and skipped.success and skipped.observed == {"skipped": "no reference statistics"}


def test_drift_on_station_batches(qs):
    from etfuse.sources.stations import point_dataset
    from pathlib import Path

    frame = pd.DataFrame({"station_id": "52866", "time": pd.date_range("2021-06-01", "2021-06-30"), "lat": 36.7333,
                          "lon": 101.75, "elevation_m": 2295.2, "et": 6.0, "_file": "x"})
    ds = point_dataset(frame, source="stations", paths=[Path("x")])
    stats = {"format": STATS_FORMAT, "sources": {"stations": {"et": {"6": {"mean": 2.0, "std": 0.5, "p01": 0.5,
                                                                           "p50": 2.0, "p99": 4.0, "count": 500}}}}}
    result = validate("stations", ds, settings=qs, context=ValidationContext(today=TODAY, reference_stats=stats))
    assert [o.check for o in result.warnings] == ["drift_et"]
