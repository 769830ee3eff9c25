"""The synthetic world: provider formats that the readers accept, truth kept apart, deterministic."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from etfuse.harmonise import harmonise_into_store
from etfuse.sources import read_source
from etfuse.store import HarmonisedStore
from etfuse.synth.world import WorldSpec, generate

from tests.conftest import SMALL_WORLD


def _landing(world, source):
    return sorted((world / "landing" / source).glob("*"))


def test_layout_and_manifest(small_world):
    manifest = json.loads((small_world / "manifest.json").read_text())
    assert manifest["spec"]["start"] == SMALL_WORLD["start"]
    names = {k: len(v) for k, v in manifest["files"].items()}
    assert names == {"era5land": 2, "gleam": 1, "cma": 2, "stations": 1, "modis": 40, "truth": 2}
    assert [p.name for p in _landing(small_world, "gleam")] == ["E_2021_GLEAM_v3.7a.nc"]
    assert _landing(small_world, "cma")[0].name == "SURF_CLI_CHN_MUL_DAY-EVP-13240-202106.TXT"
    assert manifest["stations"] == ["52862", "52863", "52866", "52869", "52875"] or len(manifest["stations"]) >= 3
    assert (small_world / "static" / "elevation.nc").exists() and (small_world / "truth" / "capacity.nc").exists()
    # nothing from truth/ is in landing/
    landing_names = {p.name for p in (small_world / "landing").rglob("*")}
    assert not landing_names & {p.name for p in (small_world / "truth").iterdir()}


def test_every_landing_file_reads_and_days_are_complete(small_world, small_settings):
    store = HarmonisedStore(small_settings.harmonised)
    for source in ("era5land", "gleam", "modis", "cma", "stations"):
        for path in _landing(small_world, source):
            harmonise_into_store(source, path, store, settings=small_settings)
    days = pd.date_range(SMALL_WORLD["start"], SMALL_WORLD["end"])
    for source in ("era5land", "gleam", "modis"):
        stored = store.grid_days(source)
        assert set(days) <= set(stored), source
    # ERA5-Land: the month boundary day (30 June) is completed by July's first 00 UTC step
    era5 = store.open_grid("era5land", days[0], days[-1])
    assert {"et", "net_radiation", "skt"} <= set(era5.data_vars)
    assert np.isfinite(era5["et"].values).all() and np.isfinite(era5["skt"].values).all()
    assert era5["et"].sel(time="2021-06-30").attrs["era5_stream"] in ("final", "ERA5T")
    last = store.read_grid_day("era5land", days[-1])
    assert last["et"].attrs["era5_stream"] == "ERA5T"             # the last days arrive as ERA5T
    cma = store.read_stations("cma", with_missing=True)
    assert cma["station_id"].nunique() >= 3 and len(cma) == cma["station_id"].nunique() * len(days)
    assert 0.0 < cma["et_mm"].isna().mean() < 0.2                 # missing station-days exist, not too many
    assert len(store.read_stations("stations")) == len(days) * 2   # two lysimeters (no flux site inside)


def test_sources_are_noisy_views_of_the_truth_not_copies(small_world, small_settings):
    truth = xr.open_dataset(_landing(small_world.parent / small_world.name, "..")[0]) if False else None
    truth = xr.open_mfdataset(sorted((small_world / "truth").glob("et_truth_*.nc")))["et"].load()
    gleam = read_source("gleam", _landing(small_world, "gleam"), settings=small_settings)
    g_at = gleam["et"].sel(lat=truth["lat"], lon=truth["lon"], method="nearest").values
    diff = g_at - truth.values
    assert np.nanmean(diff) > 0.5                       # GLEAM-like: biased high
    assert np.nanstd(diff) > 0.5                        # and noisy
    st = pd.read_csv(small_world / "truth" / "stations_truth.csv")
    obs = st["et_obs_mm"].to_numpy()
    ok = np.isfinite(obs)
    assert np.sqrt(np.mean((obs[ok] - st["et_truth_mm"].to_numpy()[ok]) ** 2)) < 1.0   # stations are close to truth
    assert (truth.values >= 0).all() and 0.5 < float(truth.mean()) < 5.0               # summer ET [mm/day]


def test_pan_readings_turn_back_into_station_et(small_world, small_settings):
    ds = read_source("cma", _landing(small_world, "cma"), settings=small_settings)
    frame = ds.to_dataframe().reset_index()
    st = pd.read_csv(small_world / "truth" / "stations_truth.csv", dtype={"station_id": str})
    st["time"] = pd.to_datetime(st["date"])
    merged = frame.merge(st, left_on=["station_id", "time"], right_on=["station_id", "time"])
    ok = merged["et"].notna() & merged["et_obs_mm"].notna()
    # 0.1 mm pan quantisation times the coefficient: within 0.05 mm
    assert np.abs(merged.loc[ok, "et"] - merged.loc[ok, "et_obs_mm"]).max() < 0.05
    assert set(merged.loc[ok, "pan_used"]) == {"large", "small"}


def test_same_seed_same_world(tmp_path):
    spec = WorldSpec(bbox=(101.0, 36.0, 101.5, 36.5), start="2021-07-01", end="2021-07-03", resolution_deg=0.05,
                     seed=11, margin_deg=0.2)

    def digest(folder):
        store = HarmonisedStore(folder / "h")
        from etfuse.settings import load_settings
        s = load_settings(home=folder, region={"name": "t", "lon_min": 101.0, "lon_max": 101.5, "lat_min": 36.0,
                                               "lat_max": 36.5, "resolution_deg": 0.05, "margin_deg": 0.2})
        for src in ("gleam", "era5land"):
            for p in _landing(folder, src):
                harmonise_into_store(src, p, store, settings=s)
        h = hashlib.sha256()
        for src in ("gleam", "era5land"):
            ds = store.open_grid(src).load()
            for v in sorted(ds.data_vars):
                h.update(np.nan_to_num(ds[v].values).tobytes())
        return h.hexdigest()

    generate(tmp_path / "a", spec)
    generate(tmp_path / "b", spec)
    generate(tmp_path / "c", WorldSpec(**{**spec.__dict__, "seed": 12}))
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


def test_bad_period_is_refused(tmp_path):
    with pytest.raises(ValueError, match="empty period"):
        generate(tmp_path, WorldSpec(bbox=(101, 36, 102, 37), start="2021-02-01", end="2021-01-01"))


@pytest.mark.slow
def test_error_magnitudes_like_the_seed(tmp_path):
    """A year over the test region: raw GLEAM RMSE about 3.5 mm/d, ERA5-Land about 2.6 mm/d against stations."""
    import time

    from etfuse.settings import load_settings
    from etfuse.skill import score_raw_sources
    settings = load_settings(home=tmp_path / "home", region="test")
    t0 = time.perf_counter()
    generate(tmp_path / "w", WorldSpec(bbox=settings.region.bbox, start="2021-01-01", end="2021-12-31", seed=5))
    elapsed = time.perf_counter() - t0
    store = HarmonisedStore(settings.harmonised)
    for source in ("gleam", "era5land", "cma"):
        for path in _landing(tmp_path / "w", source):
            harmonise_into_store(source, path, store, settings=settings)
    scores = score_raw_sources(store, settings)
    assert 3.0 < scores.loc["gleam", "rmse"] < 4.0
    assert 2.2 < scores.loc["era5land", "rmse"] < 3.0
    assert scores.loc["gleam", "rmse"] > scores.loc["era5land", "rmse"]
    assert elapsed < 60, f"a test-region year took {elapsed:.0f} s"
