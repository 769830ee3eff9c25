"""Station facts tables, degree-minute conversion and the station CSV frame."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import xarray as xr

from etfuse.stations_meta import (FRAME_COLUMNS, cma_stations, degree_minutes_to_degrees,
                                  degrees_to_degree_minutes, fluxnet_sites, known_locations, stations_to_frame)
from tests.conftest import realdata_file



def test_degree_minutes_to_degrees():
    assert degree_minutes_to_degrees(3644) == pytest.approx(36 + 44 / 60)
    assert degree_minutes_to_degrees(10145) == pytest.approx(101.75)
    assert degree_minutes_to_degrees(-3630) == pytest.approx(-36.5)
    assert degree_minutes_to_degrees(0) == 0.0
    np.testing.assert_allclose(degree_minutes_to_degrees(np.array([3600, 3659, 9000])), [36.0, 36 + 59 / 60, 90.0])
    with pytest.raises(ValueError, match="minutes >= 60"):
        degree_minutes_to_degrees([3644, 3675])


def test_degrees_to_degree_minutes_round_trip():
    dm = np.array([3644, 10145, 3300, 9658, 3959, -1230, 0])
    np.testing.assert_array_equal(degrees_to_degree_minutes(degree_minutes_to_degrees(dm)), dm)
    assert degrees_to_degree_minutes(36.9999) == 3700                    # 59.994 minutes round up to a degree
    assert degrees_to_degree_minutes(36.7333) == 3644


def test_facts_tables():
    cma = cma_stations()
    assert len(cma) == 52 and cma["station_id"].is_unique
    assert cma["station_id"].map(type).eq(str).all()
    xining = cma.set_index("station_id").loc["52866"]
    assert (xining["lat"], xining["lon"], xining["elevation_m"]) == pytest.approx((36.7333, 101.75, 2295.2))
    assert {"52818", "56029"} <= set(cma["station_id"])                   # Golmud, Yushu (docs/data-formats.md)
    # every Qinghai station lies in the Qinghai region plus its margin
    assert cma["lat"].between(31.37 - 0.5, 39.87 + 0.5).all() and cma["lon"].between(89.5 - 0.5, 103.4 + 0.5).all()
    flx = fluxnet_sites().set_index("site_id")
    assert flx.loc["CN-HaM", "lat"] == pytest.approx(37.37) and flx.loc["CN-HaM", "lon"] == pytest.approx(101.18)
    cma.loc[0, "lat"] = -1.0                                              # callers get copies
    assert cma_stations().loc[0, "lat"] != -1.0


def test_known_locations_union():
    known = known_locations()
    assert known.index.is_unique and len(known) == 52 + len(fluxnet_sites())
    assert list(known.columns) == ["lat", "lon", "elevation_m"]
    assert known.loc["CN-HaM", "elevation_m"] == pytest.approx(3250.0)
    assert known.loc["52866", "lat"] == pytest.approx(36.7333)


@pytest.mark.realdata
def test_facts_table_matches_the_national_list():
    """The shipped decimal coordinates are the national list's degree-minutes, converted."""
    national = pd.read_csv(realdata_file("cma", "national_station_list_2016.csv"))
    qinghai = national[national["prov"] == "青海"]
    qinghai = qinghai.set_index(qinghai["site"].astype(str))
    facts = cma_stations().set_index("station_id")
    assert set(qinghai.index) == set(facts.index)
    np.testing.assert_allclose(facts["lat"], degree_minutes_to_degrees(qinghai.loc[facts.index, "lat"].to_numpy()), atol=1e-4)
    np.testing.assert_allclose(facts["lon"], degree_minutes_to_degrees(qinghai.loc[facts.index, "lon"].to_numpy()), atol=1e-4)
    np.testing.assert_allclose(facts["elevation_m"], qinghai.loc[facts.index, "alt"], atol=0.05)


def test_stations_to_frame():
    ds = xr.Dataset(
        {"elevation_m": ("obs", [2295.2, np.nan]), "et": ("obs", np.array([1.5, np.nan], dtype=np.float32))},
        coords={"station_id": ("obs", np.array(["52866", "CN-HaM"])),
                "time": ("obs", pd.to_datetime(["2020-07-01", "2020-07-02"]).to_numpy()),
                "lat": ("obs", [36.7333, 37.37]), "lon": ("obs", [101.75, 101.18])})
    frame = stations_to_frame(ds)
    assert tuple(frame.columns) == FRAME_COLUMNS == ("station_id", "date", "lat", "lon", "elevation_m", "et_mm")
    assert frame["date"].tolist() == ["2020-07-01", "2020-07-02"]
    assert frame["station_id"].tolist() == ["52866", "CN-HaM"]
    assert frame["et_mm"].iloc[0] == 1.5 and np.isnan(frame["et_mm"].iloc[1]) and np.isnan(frame["elevation_m"].iloc[1])
    text = frame.to_csv(index=False)
    assert text.splitlines()[1] == "52866,2020-07-01,36.7333,101.75,2295.2,1.5"
