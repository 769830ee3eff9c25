"""The realistic synthetic world: hard in the documented ways, readable, deterministic, truth kept apart."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from etfuse.harmonise import harmonise_into_store
from etfuse.settings import load_settings
from etfuse.sources import read_source
from etfuse.store import HarmonisedStore
from etfuse.synth.realistic import RealisticSpec, RealisticWorld, generate_realistic

#: 1 x 1 deg at 0.05 deg around Xining and Haibei, across the first MODIS day (2000-02-24)
TINY = dict(bbox=(101.0, 36.0, 102.0, 37.0), start="2000-02-10", end="2000-03-12", resolution_deg=0.05, seed=3,
            margin_deg=0.3)


def _settings(home):
    w, s, e, n = TINY["bbox"]
    return load_settings(home=home, region={"name": "tiny", "lon_min": w, "lon_max": e, "lat_min": s, "lat_max": n,
                                            "resolution_deg": TINY["resolution_deg"], "margin_deg": TINY["margin_deg"]})


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("realistic")
    generate_realistic(out, RealisticSpec(**TINY))
    return out


@pytest.mark.slow
def test_ingest_accepts_every_file(tiny_world, tmp_path):
    """The Great Expectations suites accept the realistic world's deliveries as they are."""
    import shutil
    from datetime import date

    from etfuse.ingest import ingest_all
    settings = _settings(tmp_path / "home")
    shutil.copytree(tiny_world / "landing", settings.folder("landing"), dirs_exist_ok=True)
    report = ingest_all(settings, today=date(2000, 4, 1))
    statuses = {o.status for o in report.outcomes}
    assert len(report.outcomes) == sum(1 for p in (tiny_world / "landing").rglob("*") if p.is_file())
    assert statuses == {"accepted"}, [(o.status, str(o)[:300]) for o in report.outcomes if o.status != "accepted"]


def _digest(folder) -> str:
    h = hashlib.sha256()
    for path in sorted((folder / "landing").rglob("*")):
        if path.is_file() and path.parent.name != "era5land":      # ERA5-Land ZIPs carry a write time
            h.update(path.name.encode())
            h.update(path.read_bytes())
    h.update((folder / "truth" / "stations_truth.csv").read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed(tiny_world, tmp_path):
    spec = RealisticSpec(**TINY)
    generate_realistic(tmp_path / "again", spec)
    generate_realistic(tmp_path / "other", RealisticSpec(**{**TINY, "seed": 4}))
    assert _digest(tiny_world) == _digest(tmp_path / "again") != _digest(tmp_path / "other")


def test_no_modis_before_terra_and_regimes_flagged(tiny_world):
    modis = sorted(p.name for p in (tiny_world / "landing" / "modis").iterdir())
    days = list(pd.to_datetime([n.split(".")[1][1:] for n in modis], format="%Y%j"))
    assert min(days) == pd.Timestamp("2000-02-24") and len(days) == 18
    regimes = pd.read_csv(tiny_world / "truth" / "regimes.csv", parse_dates=["date"])
    assert (regimes["modis_available"] == (regimes["date"] >= "2000-02-24")).all()
    manifest = json.loads((tiny_world / "manifest.json").read_text())
    assert manifest["profile"] == "realistic" and manifest["modis_first_day"] == "2000-02-24"
    assert manifest["drought_year"] is None and not regimes["drought"].any()   # no whole growing season inside


def test_truth_never_in_landing(tiny_world):
    landing = {p.name for p in (tiny_world / "landing").rglob("*")}
    truth = {p.name for p in (tiny_world / "truth").iterdir()}
    assert truth >= {"regimes.csv", "pan_coefficients.csv", "stations_truth.csv", "capacity.nc"}
    assert not landing & truth
    text = b"".join(p.read_bytes() for p in (tiny_world / "landing").rglob("*.csv"))
    assert b"et_truth" not in text and b"pan_coefficient" not in text


def test_every_landing_file_reads_into_the_store(tiny_world, tmp_path):
    settings = _settings(tmp_path / "home")
    store = HarmonisedStore(settings.harmonised)
    for source in ("era5land", "gleam", "modis", "cma", "stations"):
        for path in sorted((tiny_world / "landing" / source).iterdir()):
            harmonise_into_store(source, path, store, settings=settings)
    assert min(store.grid_days("modis")) == pd.Timestamp("2000-02-24")
    assert pd.Timestamp("2000-02-10") in set(store.grid_days("era5land"))
    cma = store.read_stations("cma", with_missing=True)
    assert cma["station_id"].nunique() >= 3
    # the large pan is frozen in February and March: every station ET comes from the small pan
    ds = read_source("cma", sorted((tiny_world / "landing" / "cma").iterdir()), settings=settings)
    used = set(ds["pan_used"].values.astype(str)) - {""}
    assert used == {"small"}


def test_pan_coefficients_hidden_and_differ_per_station_and_season(tiny_world):
    k = pd.read_csv(tiny_world / "truth" / "pan_coefficients.csv", dtype={"station_id": str})
    large = k[k["pan"] == "large"].pivot(index="station_id", columns="month", values="coefficient")
    assert large.shape[1] == 12 and len(large) >= 3
    assert (large.std(axis=0) > 0.03).all()                     # between stations, every month
    assert ((large.max(axis=1) - large.min(axis=1)) > 0.02).all()   # over the seasons, every station
    assert not np.isclose(large.values, 0.5).all()              # not the reader's configured 0.5
    st = pd.read_csv(tiny_world / "truth" / "stations_truth.csv")
    ok = st["et_obs_mm"].notna() & (st["et_point_mm"] > 0.3) & ~st["outlier"]
    ratio = (st.loc[ok, "et_obs_mm"] / st.loc[ok, "et_point_mm"]).groupby(st.loc[ok, "station_id"]).median()
    assert ratio.std() > 0.05                                   # after the reader's conversion: biased per station


def test_station_gaps_are_multi_day(tmp_path):
    spec = RealisticSpec(**{**TINY, "start": "2000-06-01", "end": "2000-09-30"})
    world = RealisticWorld(spec)
    missing = []
    for day in spec.days():
        rows = world._station_day(day, world._day(day))
        missing.append([np.isnan(r["et_obs_mm"]) for r in rows])
    missing = np.array(missing)
    runs = []
    for col in missing.T:
        edges = np.diff(np.concatenate([[0], col.astype(int), [0]]))
        runs.extend(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))
    assert 0.01 < missing.mean() < 0.25 and max(runs) >= 5


def _summer_errors(spec: RealisticSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    world = RealisticWorld(spec)
    truth, gleam, era5 = [], [], []
    for day in spec.days():
        f = world._day(day)
        truth.append(f["et"])
        gleam.append(f["et_gleam_model"])
        era5.append(f["et_era5land_model"])
    return np.stack(truth), np.stack(gleam), np.stack(era5)


def _anomaly_correlation(truth, a, b) -> float:
    ea, eb = a - truth, b - truth
    ea, eb = ea - ea.mean(axis=0), eb - eb.mean(axis=0)           # day-to-day error, per cell
    return float(np.corrcoef(ea.ravel(), eb.ravel())[0, 1])


def test_products_share_a_forcing_error_but_are_not_identical():
    summer = {**TINY, "start": "2000-06-01", "end": "2000-08-15", "bbox": (100.5, 35.5, 102.5, 37.5),
              "resolution_deg": 0.1}
    shared = _anomaly_correlation(*_summer_errors(RealisticSpec(**summer)))
    alone = _anomaly_correlation(*_summer_errors(RealisticSpec(**summer, forcing_rn_sd=0.0, forcing_t_sd_k=0.0)))
    print(f"error anomaly correlation GLEAM/ERA5-Land: shared forcing {shared:.2f}, without {alone:.2f}")
    assert 0.2 < shared < 0.95
    assert shared > alone + 0.1


def _growing_season_truth_mean(spec: RealisticSpec) -> float:
    world = RealisticWorld(spec)
    return float(np.mean([world._day(day)["et"].mean() for day in spec.days()]))


def test_drought_year_has_lower_growing_season_truth_et():
    """Same seed, same weather: only the drought's rain deficit (and warmth) differs."""
    season = {**TINY, "start": "2000-05-01", "end": "2000-08-31", "resolution_deg": 0.1}
    drought = RealisticSpec(**season, drought_year=2000)
    normal = RealisticSpec(**season, drought_year=1990)
    assert drought.resolved_drought_year() == 2000
    assert _growing_season_truth_mean(drought) < 0.85 * _growing_season_truth_mean(normal)
    two_years = RealisticSpec(**{**TINY, "start": "1999-07-01", "end": "2001-06-30"})
    assert two_years.resolved_drought_year() == 2000       # the one growing season wholly inside
    assert sum(two_years.is_drought_day(d) for d in two_years.days()) == 153     # May to September 2000


def test_raw_source_skill_scores_both_products_against_three_references(tiny_world):
    from etfuse.synth.raw_skill import raw_source_skill
    scores = raw_source_skill(tiny_world, cell_stride=2)
    assert list(scores["source"]) == ["gleam"] * 3 + ["era5land"] * 3
    assert list(scores["against"]) == ["stations", "station_cells", "truth"] * 2
    assert (scores["n"] > 100).all() and np.isfinite(scores[["rmse_mm", "bias_mm", "cc"]].values).all()
    truth = scores[scores["against"] == "truth"].set_index("source")
    assert (truth["bias_mm"] > 0).all()                   # both products run high, as configured (gains > 1)
