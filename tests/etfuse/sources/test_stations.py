"""Plain station tables station_id,date,et_mm[,lat,lon,elevation_m]."""

from __future__ import annotations

import csv
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from etfuse.errors import NoOverlapError, SourceFormatError
from etfuse.settings import load_settings
from etfuse.sources import get_reader, read_source
from etfuse.stations_meta import stations_to_frame
from etfuse.synth.writers_stations import write_station_table


def _facts(name: str, key: str) -> dict[str, dict[str, str]]:
    """The shipped facts table read with the csv module, independently of etfuse.stations_meta."""
    text = resources.files("etfuse.data").joinpath(name).read_text(encoding="utf-8")
    return {row[key]: row for row in csv.DictReader(text.splitlines())}


@pytest.fixture(autouse=True)
def _no_etfuse_environment(clean_environment):
    """Default settings only in this module."""


def _read(path, **kw):
    return read_source("stations", path, settings=load_settings(), **kw)


def test_registered_as_station_reader():
    spec = get_reader("stations")
    assert spec.kind == "stations" and spec.read.__name__ == "read_station_table"


def test_table_with_coordinates(tmp_path):
    path = tmp_path / "lysimeter.csv"
    path.write_text("station_id,date,et_mm,lat,lon,elevation_m\n"
                    "LYS-1,2020-07-02,3.25,36.1,100.9,3100\n"
                    "LYS-1,2020-07-01,2.5,36.1,100.9,3100\n"
                    "LYS-1,2020-07-03,,36.1,100.9,3100\n")
    ds = _read(path)
    assert ds.sizes["obs"] == 3 and ds.attrs["source"] == "stations" and ds.attrs["featureType"] == "point"
    assert list(ds["time"].values) == list(pd.date_range("2020-07-01", periods=3).to_numpy(dtype="datetime64[ns]"))
    np.testing.assert_allclose(ds["et"].values, [2.5, 3.25, np.nan])         # sorted; missing day kept
    assert ds["et"].dtype == np.float32 and ds["et"].attrs["units"] == "kg m-2"
    assert (ds["lat"].values == 36.1).all() and (ds["lon"].values == 100.9).all()
    assert (ds["elevation_m"].values == 3100.0).all()
    assert ds.attrs["source_files"] == "lysimeter.csv"


def test_table_without_coordinates_takes_the_facts_tables(tmp_path):
    path = tmp_path / "measured.csv"
    path.write_text("station_id,date,et_mm\n52866,2020-07-01,3.0\nCN-HaM,2020-07-01,2.0\n52866,2020-07-02,3.5\n")
    ds = _read(path)
    cma = _facts("cma_stations_qinghai.csv", "station_id")["52866"]
    flx = _facts("fluxnet_sites.csv", "site_id")["CN-HaM"]
    assert list(ds["station_id"].values) == ["52866", "52866", "CN-HaM"]
    for i, facts in ((0, cma), (1, cma), (2, flx)):
        assert ds["lat"].values[i] == pytest.approx(float(facts["lat"]))
        assert ds["lon"].values[i] == pytest.approx(float(facts["lon"]))
        assert ds["elevation_m"].values[i] == pytest.approx(float(facts["elevation_m"]))
    assert ds["lat"].values[0] == pytest.approx(36.7333)            # Xining, docs/data-formats.md


def test_partial_coordinates_and_unknown_elevation(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("station_id,date,et_mm,lat,lon,elevation_m\n"
                    "52866,2020-07-01,3.0,,,\n"             # no coordinates: facts
                    "52866,2020-07-02,3.0,36.70,101.70,\n"  # own coordinates kept, elevation from facts
                    "EC-9,2020-07-01,1.0,36.0,101.0,\n")     # own coordinates, elevation unknown
    ds = _read(path)
    assert ds["lat"].values[0] == pytest.approx(36.7333) and ds["lat"].values[1] == pytest.approx(36.70)
    assert ds["elevation_m"].values[1] == pytest.approx(2295.2)
    assert ds["station_id"].values[2] == "EC-9" and np.isnan(ds["elevation_m"].values[2])


def test_unknown_station_without_coordinates(tmp_path):
    path = tmp_path / "unknown.csv"
    path.write_text("station_id,date,et_mm\n52866,2020-07-01,3.0\n99999,2020-07-01,1.0\nXX-Abc,2020-07-01,1.0\n")
    with pytest.raises(SourceFormatError, match=r"unknown\.csv: variable 'station_id': no coordinates for "
                                                r"station\(s\) 99999, XX-Abc.*add lat,lon"):
        _read(path)


@pytest.mark.parametrize("content, match", [
    ("station,date,et\n1,2020-01-01,1\n", r"missing column\(s\) \['station_id', 'et_mm'\]"),
    ("station_id,date,et_mm\n52866,2020-07-01,3.0\n52866,01/07/2020,3.0\n", r"line 3: bad date; expected a date as YYYY-MM-DD"),
    ("station_id,date,et_mm\n52866,2020-07-01,three\n", r"line 2: bad value in column 'et_mm'"),
    ("station_id,date,et_mm\n,2020-07-01,3\n", r"line 2: blank station_id"),
    ("station_id,date,et_mm\n", r"the table has no rows"),
])
def test_malformed_tables(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(SourceFormatError, match=match):
        _read(path)


def test_repeats_and_several_files(tmp_path):
    a = tmp_path / "a.csv"
    b = tmp_path / "b.csv"
    a.write_text("station_id,date,et_mm\n52866,2020-07-02,3.0\nCN-HaM,2020-07-01,2.0\n")
    b.write_text("station_id,date,et_mm\n52866,2020-07-01,1.0\n52866,2020-07-02,3.0\n")
    ds = _read([a, b])
    assert ds.sizes["obs"] == 3 and ds.attrs["source_files"] == "a.csv b.csv"
    assert list(ds["station_id"].values) == ["52866", "52866", "CN-HaM"]
    np.testing.assert_allclose(ds["et"].values, [1.0, 3.0, 2.0])
    b.write_text("station_id,date,et_mm\n52866,2020-07-02,3.1\n")
    with pytest.raises(SourceFormatError, match=r"a\.csv: station 52866 day 2020-07-02 appears 2 times with "
                                                r"different values.*found rows in .*a\.csv, .*b\.csv"):
        _read([a, b])


def test_bbox_clipping_and_no_overlap(tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("station_id,date,et_mm\n52866,2020-07-01,3.0\n52818,2020-07-01,2.0\n")
    assert set(_read(path)["station_id"].values) == {"52866", "52818"}
    east = read_source("stations", path, settings=load_settings(region="test"))
    assert list(east["station_id"].values) == ["52866"]
    with pytest.raises(NoOverlapError, match=r"two\.csv: no station of the file lies inside the region"):
        _read(path, bbox=(120.0, 20.0, 121.0, 21.0))


def test_round_trip_through_writer_and_frame(tmp_path):
    table = pd.DataFrame({"station_id": ["52866", "52866", "CN-HaM"],
                          "date": pd.to_datetime(["2020-07-01", "2020-07-02", "2020-07-01"]),
                          "et_mm": [3.125, np.nan, 2.0], "lat": [36.7333, 36.7333, 37.37],
                          "lon": [101.75, 101.75, 101.18], "elevation_m": [2295.2, 2295.2, 3250.0]})
    path = write_station_table(tmp_path / "table.csv", table)
    assert path.read_text().splitlines()[:3] == ["station_id,date,et_mm,lat,lon,elevation_m",
                                                 "52866,2020-07-01,3.125,36.7333,101.75,2295.2",
                                                 "52866,2020-07-02,,36.7333,101.75,2295.2"]
    frame = stations_to_frame(_read(path))
    expected = table.assign(date=table["date"].dt.strftime("%Y-%m-%d"))
    pd.testing.assert_frame_equal(frame,
                                  expected[["station_id", "date", "lat", "lon", "elevation_m", "et_mm"]],
                                  check_dtype=False)
    # and without coordinates: the facts fill them in
    bare = write_station_table(tmp_path / "bare.csv", table[["station_id", "date", "et_mm"]])
    assert bare.read_text().splitlines()[0] == "station_id,date,et_mm"
    np.testing.assert_allclose(_read(bare)["lat"].values, [36.7333, 36.7333, 37.37])
