"""FLUXNET2015 daily reader: the real CN-HaM file and synthetic files from the writer."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from etfuse.errors import NoOverlapError, SourceFormatError
from etfuse.settings import load_settings
from etfuse.sources import get_reader, read_source
from etfuse.synth.writers_stations import FLUXNET_HEADER, fluxnet_daily_file_name, write_fluxnet_daily
from tests.conftest import realdata_file

HAM = "FLX_CN-HaM_FLUXNET2015_FULLSET_DD_2002-2004_1-4.csv"


@pytest.fixture(autouse=True)
def _no_etfuse_environment(clean_environment):
    """Default settings only in this module."""



def _et(le: float, t: float | None) -> float:
    """ET [mm/day] from daily mean LE [W m-2] and T [degC], written out here independently."""
    lam = 2.45e6 if t is None else (2.501 - 0.002361 * t) * 1e6
    return le * 86400.0 / lam


def _read(path, settings=None, **kw):
    return read_source("fluxnet", path, settings=settings or load_settings(), **kw)


@pytest.mark.realdata
def test_real_cn_ham_daily_file():
    path = realdata_file("fluxnet", HAM)
    filtered = _read(path)                                  # default: days with LE_F_MDS_QC < 0.5 lose their ET
    ds = _read(path, settings=load_settings(fluxnet={"min_qc_fraction": 0.0}))
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert ds.sizes["obs"] == len(rows) == 1096
    assert set(ds["station_id"].values) == {"CN-HaM"} and ds.attrs["source"] == "fluxnet"
    assert ds["lat"].values[0] == pytest.approx(37.37) and ds["lon"].values[0] == pytest.approx(101.18)
    assert ds["elevation_m"].values[0] == pytest.approx(3250.0)
    assert ds["time"].values[0] == np.datetime64("2002-01-01", "ns")
    assert ds["time"].values[-1] == np.datetime64("2004-12-31", "ns")
    for i in (0, 6, 200, 560, 1095):                       # winter, spring, summer days
        row = rows[i]
        day = np.datetime64(f"{row['TIMESTAMP'][:4]}-{row['TIMESTAMP'][4:6]}-{row['TIMESTAMP'][6:]}", "ns")
        assert ds["time"].values[i] == day
        expected = _et(float(row["LE_F_MDS"]), float(row["TA_F"]))
        assert ds["et"].values[i] == pytest.approx(expected, rel=1e-6)
        assert ds["latent_heat_flux"].values[i] == pytest.approx(float(row["LE_F_MDS"]), rel=1e-6)
        assert ds["qc_fraction"].values[i] == pytest.approx(float(row["LE_F_MDS_QC"]), rel=1e-6)
    # 2002-01-01: LE 3.90 W m-2 at -14.4 degC -> 0.133 mm
    assert ds["et"].values[0] == pytest.approx(0.1329, abs=1e-4)
    # summer ET at an alpine meadow is a few mm a day; the three-year mean about 1 mm/day
    summer = pd.DatetimeIndex(ds["time"].values).month.isin([6, 7, 8])
    assert 2.0 < float(np.nanmean(ds["et"].values[summer])) < 4.0
    # LE_F_MDS is never -9999 in this file; the days with less than half good half-hours lose their ET
    qc = np.array([float(r["LE_F_MDS_QC"]) for r in rows])
    assert not np.isnan(ds["et"].values).any() and (qc < 0.5).sum() == 33
    assert np.array_equal(np.isnan(filtered["et"].values), qc < 0.5)
    np.testing.assert_array_equal(filtered["et"].values[qc >= 0.5], ds["et"].values[qc >= 0.5])
    # TA_F_MDS has -9999 days; the reader uses TA_F, so those days still get a temperature
    fills = [i for i, r in enumerate(rows) if r["TA_F_MDS"] == "-9999"]
    assert len(fills) == 284
    i = fills[0]
    assert ds["et"].values[i] == pytest.approx(_et(float(rows[i]["LE_F_MDS"]), float(rows[i]["TA_F"])), rel=1e-6)


def _daily(n: int = 5, **columns) -> pd.DataFrame:
    table = pd.DataFrame({"date": pd.date_range("2019-07-01", periods=n), "LE_F_MDS": np.linspace(50, 90, n),
                          "LE_F_MDS_QC": np.linspace(0.5, 1.0, n), "TA_F": np.linspace(8, 12, n),
                          "TA_F_MDS": np.linspace(8, 12, n), "H_F_MDS": 30.0})
    for name, values in columns.items():
        table[name] = values
    return table


def _write(tmp_path: Path, table: pd.DataFrame, site: str = "CN-HaM") -> Path:
    return write_fluxnet_daily(tmp_path / fluxnet_daily_file_name(site, 2019, 2019), table)


def test_registered_as_station_reader():
    spec = get_reader("fluxnet")
    assert spec.kind == "stations" and spec.read.__name__ == "read_fluxnet"


def test_writer_layout(tmp_path):
    path = _write(tmp_path, _daily(3, LE_F_MDS=[50.0, np.nan, 70.0]))
    assert path.name == "FLX_CN-HaM_FLUXNET2015_FULLSET_DD_2019-2019_1-4.csv"
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    assert header == list(FLUXNET_HEADER) and header[0] == "TIMESTAMP"
    row = dict(zip(header, lines[2].split(",")))
    assert row["TIMESTAMP"] == "20190702" and row["LE_F_MDS"] == "-9999" and row["NETRAD"] == "-9999"
    assert row["H_F_MDS"] == "30"


def test_fills_and_temperature_fallbacks(tmp_path):
    table = _daily(5, LE_F_MDS=[50.0, np.nan, 70.0, 80.0, 90.0], LE_F_MDS_QC=[1.0, np.nan, 0.25, 0.5, 0.75],
                   TA_F=[10.0, 10.0, np.nan, np.nan, 5.0], TA_F_MDS=[10.0, 10.0, 4.0, np.nan, -20.0])
    ds = _read(_write(tmp_path, table))
    assert ds.sizes["obs"] == 5                                   # the -9999 day is kept as NaN
    np.testing.assert_allclose(ds["et"].values,                  # QC 0.25 < 0.5: no ET that day
                               [_et(50, 10), np.nan, np.nan, _et(80, None), _et(90, 5)], rtol=1e-6)
    np.testing.assert_allclose(ds["latent_heat_flux"].values, [50, np.nan, 70, 80, 90], rtol=1e-6)
    np.testing.assert_allclose(ds["qc_fraction"].values, [1.0, np.nan, 0.25, 0.5, 0.75], rtol=1e-6)
    assert ds["qc_fraction"].dtype == np.float32 and ds["et"].dtype == np.float32
    assert ds["latent_heat_flux"].attrs["units"] == "W m-2" and ds["qc_fraction"].attrs["units"] == "1"
    assert ds["et"].attrs["units"] == "kg m-2" and "local standard time" in ds.attrs["day_definition"]
    assert not (ds["latent_heat_flux"].values == -9999).any()


def test_round_trip(tmp_path):
    table = _daily(30)
    ds = _read(_write(tmp_path, table))
    np.testing.assert_array_equal(ds["time"].values, table["date"].to_numpy(dtype="datetime64[ns]"))
    np.testing.assert_allclose(ds["latent_heat_flux"].values, table["LE_F_MDS"], rtol=1e-5)
    np.testing.assert_allclose(ds["et"].values, [_et(le, t) for le, t in zip(table["LE_F_MDS"], table["TA_F"])],
                               rtol=1e-5)


@pytest.mark.parametrize("name, match", [
    ("FLX_US-Xyz_FLUXNET2015_FULLSET_DD_2019-2019_1-4.csv",
     r"FLX_US-Xyz.*unknown FLUXNET site 'US-Xyz'; expected one of the 212 FLUXNET2015 sites of "
     r"etfuse/data/fluxnet_sites\.csv.*add the site .* to etfuse/data/fluxnet_sites\.csv"),
    ("CN-HaM_daily.csv", r"CN-HaM_daily\.csv: file name is not a FLUXNET2015 file name; expected FLX_<SITE>"),
    ("FLX_CN-HaM_FLUXNET2015_FULLSET_HH_2019-2019_1-4.csv", r"not a daily FLUXNET2015 file; expected resolution DD, found HH"),
])
def test_site_and_name_errors(tmp_path, name, match):
    path = write_fluxnet_daily(tmp_path / name, _daily(2))
    with pytest.raises(SourceFormatError, match=match):
        _read(path)


@pytest.mark.parametrize("content, match", [
    ("TIMESTAMP,TA_F,H_F_MDS\n20190701,5,30\n", r"missing column\(s\) \['LE_F_MDS'\]"),
    ("TIMESTAMP,LE_F_MDS,LE_F_MDS_QC\n20190701,50,1\n20190732,50,1\n", r"line 3: bad date; expected a date as YYYYMMDD"),
    ("TIMESTAMP,LE_F_MDS,LE_F_MDS_QC\n20190701,50,3\n", r"line 2: LE_F_MDS_QC outside 0\.\.1"),
    ("TIMESTAMP,LE_F_MDS\n20190701,NaN?\n", r"line 2: bad value in column 'LE_F_MDS'"),
])
def test_malformed_content(tmp_path, content, match):
    path = tmp_path / fluxnet_daily_file_name("CN-HaM", 2019, 2019)
    path.write_text(content)
    with pytest.raises(SourceFormatError, match=match):
        _read(path)


def test_bbox_and_no_overlap(tmp_path):
    path = _write(tmp_path, _daily(2))
    assert read_source("fluxnet", path, settings=load_settings(region="test")).sizes["obs"] == 2
    with pytest.raises(NoOverlapError, match=r"expected stations inside lon 90\.\.95.*found 1 station\(s\) at lon 101\.18"):
        _read(path, bbox=(90.0, 30.0, 95.0, 35.0))


def test_repeated_days_across_files(tmp_path):
    first = _write(tmp_path, _daily(3))
    second = write_fluxnet_daily(tmp_path / "v2" / fluxnet_daily_file_name("CN-HaM", 2019, 2019, "2-1"),
                                 _daily(3, LE_F_MDS=[51.0, 70.0, 90.0]))
    with pytest.raises(SourceFormatError, match=r"station CN-HaM day 2019-07-01 appears 2 times"):
        _read([first, second])


WORLD = (-180.0, -90.0, 180.0, 90.0)


def test_site_table_is_the_fluxnet2015_list():
    from etfuse.stations_meta import fluxnet_sites
    sites = fluxnet_sites()
    assert len(sites) == 212 and sites["site_id"].is_unique
    assert sites["lat"].between(-90, 90).all() and sites["lon"].between(-180, 180).all()
    assert set(sites["igbp"]) <= {"ENF", "EBF", "DNF", "DBF", "MF", "CSH", "OSH", "WSA", "SAV", "GRA", "WET", "CRO",
                                  "SNO", "URB", "BSV", "WAT", "CVM"}
    ha2 = sites.set_index("site_id").loc["CN-Ha2"]
    assert ha2["name"] == "Haibei Shrubland" and (ha2["lat"], ha2["lon"]) == (37.6086, 101.3269)
    assert sites["elevation_m"].notna().sum() >= 200      # three Tier-2 sites have no published elevation


def test_every_listed_site_reads(tmp_path):
    """One synthetic daily file per FLUXNET2015 site, read in one call (clipped to the whole globe)."""
    from etfuse.stations_meta import fluxnet_sites
    sites = fluxnet_sites()
    paths = [write_fluxnet_daily(tmp_path / fluxnet_daily_file_name(site, 2019, 2019), _daily(2))
             for site in sites["site_id"]]
    ds = _read(paths, bbox=WORLD)
    assert set(ds["station_id"].values.astype(str)) == set(sites["site_id"]) and ds.sizes["obs"] == 2 * 212
    got = ds.to_dataframe().reset_index().groupby("station_id")[["lat", "lon"]].first()
    want = sites.set_index("site_id")[["lat", "lon"]].loc[got.index]
    np.testing.assert_allclose(got.values, want.values)
    assert np.isfinite(ds["et"].values).all()


def test_cn_ha2_reads_inside_the_region(tmp_path):
    path = _write(tmp_path, _daily(4), site="CN-Ha2")
    ds = read_source("fluxnet", path, settings=load_settings(region="qinghai"))
    assert set(ds["station_id"].values) == {"CN-Ha2"} and ds.sizes["obs"] == 4
    assert ds["lat"].values[0] == pytest.approx(37.6086) and ds["lon"].values[0] == pytest.approx(101.3269)


def test_le_corr_when_asked(tmp_path):
    table = _daily(3, LE_CORR=[60.0, np.nan, 100.0], LE_F_MDS_QC=[1.0, 1.0, 0.2])
    path = _write(tmp_path, table)
    corr = _read(path, settings=load_settings(fluxnet={"le_variable": "LE_CORR"}))
    np.testing.assert_allclose(corr["et"].values, [_et(60, 8), np.nan, np.nan], rtol=1e-6)   # -9999, QC 0.2
    np.testing.assert_allclose(corr["latent_heat_flux"].values, [60, np.nan, 100], rtol=1e-6)
    assert corr.attrs["le_variable"] == "LE_CORR" and "LE_CORR * 86400" in corr["et"].attrs["comment"]
    plain = _read(path, settings=load_settings(fluxnet={"min_qc_fraction": 0.0}))
    np.testing.assert_allclose(plain["et"].values, [_et(50, 8), _et(70, 10), _et(90, 12)], rtol=1e-6)
    assert plain.attrs["le_variable"] == "LE_F_MDS"


def test_le_corr_asked_but_absent(tmp_path):
    path = tmp_path / fluxnet_daily_file_name("CN-HaM", 2019, 2019)
    path.write_text("TIMESTAMP,LE_F_MDS,LE_F_MDS_QC\n20190701,50,1\n")
    with pytest.raises(SourceFormatError, match=r"missing column LE_CORR.*set fluxnet.le_variable to LE_F_MDS"):
        _read(path, settings=load_settings(fluxnet={"le_variable": "LE_CORR"}))
