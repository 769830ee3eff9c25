"""The update: stale days in date order, idempotent reruns, provisional -> final when GLEAM arrives,
revisions recompute exactly the days whose window they touch, one update at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from etfuse.harmonise import harmonise_into_store
from etfuse.store import HarmonisedStore
from serving.predictor import Predictor
from serving.product import ProductStore
from serving.update import UpdateLockedError, plan_days, product_lock, run_update
from tests.conftest import SMALL_WORLD
from tests.standins import export_small_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return export_small_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def world_settings(small_settings, small_world):
    return small_settings.model_copy(update={"static": small_settings.static.model_copy(
        update={"elevation_file": small_world / "static" / "elevation.nc"})})


def harmonise(settings, world, sources):
    store = HarmonisedStore(settings.harmonised)
    for source in sources:
        for path in sorted((world / "landing" / source).glob("*")):
            harmonise_into_store(source, path, store, settings=settings)
    return store


def test_update_lifecycle(world_settings, small_world, model_file):
    settings = world_settings
    store = harmonise(settings, small_world, ("era5land", "modis"))        # GLEAM is late
    product = ProductStore(settings)
    predictor = Predictor(settings, model_path=model_file, model_version=1)
    first = run_update(settings, predictor=predictor, product=product)
    days = pd.date_range("2021-06-09", SMALL_WORLD["end"])                  # ERA5-Land's first 00 UTC step: 9 June
    assert list(first.written) == [f"{d:%Y-%m-%d}" for d in days]         # date order, every day with ERA5-Land
    assert set(first.written.values()) == {"written"}
    assert {r.status for r in product.records()} == {"provisional"}         # no GLEAM anywhere yet
    field = product.read_field(days[10])
    assert field.shape == (50, 50) and np.isfinite(field).all() and (field >= 0).all()
    assert product.record(days[10]).sources_used == {"era5land", "modis"}
    assert product.year_path(2021).exists() and first.years_rebuilt == [2021]
    assert product.quicklook_path(days[10]).exists()
    # the 90 % interval: CF variables linked from et, 0 <= q05 <= et <= q95, widths scaled by the
    # season's factor (June: JJA 2.0), and carried into the yearly file
    import xarray as xr
    with xr.open_dataset(product.day_path(days[10])) as ds:
        assert ds["et"].attrs["ancillary_variables"].split()[-2:] == ["et_q05", "et_q95"]
        lo, et, hi = ds["et_q05"].values[0], ds["et"].values[0], ds["et_q95"].values[0]
        assert ds["et_q05"].attrs["units"] == "kg m-2" and "90 %" in ds["et_q95"].attrs["long_name"]
    tol = 0.01                                                               # the product's quantisation
    assert np.isfinite(lo).all() and (lo >= 0).all() and (lo <= et + tol).all() and (et <= hi + tol).all()
    assert (hi - lo).mean() > 0.05
    with xr.open_dataset(product.year_path(2021)) as year:
        np.testing.assert_allclose(year["et_q95"].sel(time=days[10]).values, hi, atol=tol)

    again = run_update(settings, predictor=predictor, product=product)
    assert again.planned == [] and again.written == {}                       # nothing stale: nothing done

    harmonise(settings, small_world, ("gleam",))                              # GLEAM arrives
    late = run_update(settings, predictor=predictor, product=product)
    assert set(late.written.values()) == {"replaced"}
    statuses = {f"{r.day:%Y-%m-%d}": r.status for r in product.records()}
    # final once every window day has GLEAM and final ERA5-Land; the last 5 days are ERA5T
    assert statuses["2021-06-20"] == "final"
    assert statuses[SMALL_WORLD["end"]] == "provisional"
    assert statuses["2021-06-12"] == "provisional"                           # its window starts before GLEAM (10 June)

    # a revised ERA5-Land day recomputes exactly the days whose window holds it
    day = store.read_grid_day("era5land", "2021-06-25")
    day["et"] = day["et"] * 1.1
    store.put_grid("era5land", day.assign_coords(has_et=("time", [True]), era5_stream=("time", ["final"])),
                   file_name="fix.nc", file_sha256="x")
    revised = run_update(settings, predictor=predictor, product=product)
    assert sorted(revised.written) == [f"{d:%Y-%m-%d}" for d in pd.date_range("2021-06-25", "2021-07-01")]

    # a new model version recomputes every day
    newer = Predictor(settings, model_path=model_file, model_version=2)
    plans = plan_days(settings, store, product, model_version=2, window_days=7)
    assert {p.reason for p in plans} == {"new model"}
    assert len(run_update(settings, predictor=newer, product=product, start="2021-07-10", end="2021-07-12").written) == 3


def test_one_update_at_a_time(world_settings):
    with product_lock(world_settings):
        with pytest.raises(UpdateLockedError, match="another update is running"):
            with product_lock(world_settings, wait_s=0):
                pass
    with product_lock(world_settings):                                       # released after use
        pass
