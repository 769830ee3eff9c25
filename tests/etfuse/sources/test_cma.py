"""CMA SURF_CLI_CHN_MUL_DAY EVP reader: real tidied sample, raw TXT layout, every decoding rule."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from etfuse.errors import NoOverlapError, SourceFormatError
from etfuse.settings import load_settings
from etfuse.sources import get_reader, read_source
from etfuse.synth.writers_stations import cma_evp_file_name, write_cma_evp_month
from tests.conftest import realdata_file

CHINA = (70.0, 15.0, 140.0, 55.0)
TIDIED = "mete840_SURF_CLI_CHN_MUL_DAY_V3_1951_tidied.csv"


@pytest.fixture(autouse=True)
def _no_etfuse_environment(clean_environment):
    """Default settings only in this module."""



def _row(ds, station: str, day: str) -> dict:
    sel = np.flatnonzero((ds["station_id"].values == station) & (ds["time"].values == np.datetime64(day, "ns")))
    assert len(sel) == 1, (station, day, sel)
    return {name: ds[name].values[sel[0]] for name in ds.variables if ds[name].dims == ("obs",)}


def _evp_table(changes: dict | None = None) -> pd.DataFrame:
    """Two Qinghai stations (Xining, Golmud with an estimated elevation), 1-3 May 2019, both pans present."""
    rows = []
    for sid, lat, lon, elev, est in (("52866", 36.7333, 101.75, 2295.2, False),
                                     ("52818", 36.4167, 94.9167, 2807.6, True)):
        for day in pd.date_range("2019-05-01", periods=3):
            rows.append(dict(station_id=sid, lat=lat, lon=lon, elevation_m=elev, elevation_estimated=est,
                             date=day, pan_small_mm=4.0, pan_large_mm=3.0, qc_small=0, qc_large=0))
    table = pd.DataFrame(rows)
    for (sid, day, column), value in (changes or {}).items():
        table.loc[(table["station_id"] == sid) & (table["date"] == pd.Timestamp(day)), column] = value
    return table


def _write(tmp_path: Path, table: pd.DataFrame, year: int = 2019, month: int = 5) -> Path:
    return write_cma_evp_month(tmp_path / cma_evp_file_name(year, month), table)


def _read(path, **settings):
    return read_source("cma", path, settings=load_settings(**settings))


# --------------------------------------------------------------------------- real sample
@pytest.mark.realdata
def test_real_tidied_csv_decodes_station_days_by_hand():
    path = realdata_file("cma", TIDIED)
    ds = read_source("cma", path, settings=load_settings(), bbox=CHINA)
    raw = pd.read_csv(path, usecols=["site", "date", "ET_sml", "ET_big", "QC_ET_sml", "QC_ET_big"])
    assert ds.sizes["obs"] == len(raw) == 42993
    assert len(np.unique(ds["station_id"].values)) == raw["site"].nunique() == 148
    assert ds.attrs["featureType"] == "point" and ds.attrs["source"] == "cma"
    assert ds.attrs["day_definition"].startswith("CMA day: 20:00 to 20:00 Beijing time")
    assert ds["et"].attrs["units"] == "kg m-2" and ds["et"].dtype == np.float32

    # 50527,1951-01-01,11945,4913,6766,ET_sml=2,ET_big=,QC 0/8: 49°13'N 119°45'E, 676.6 m, small pan 0.2 mm
    r = _row(ds, "50527", "1951-01-01")
    assert r["lat"] == pytest.approx(49 + 13 / 60) and r["lon"] == pytest.approx(119 + 45 / 60)
    assert r["elevation_m"] == pytest.approx(676.6) and not r["elevation_estimated"]
    assert r["pan_evaporation_small"] == pytest.approx(0.2) and np.isnan(r["pan_evaporation_large"])
    assert r["pan_used"] == "small" and r["et"] == pytest.approx(0.35 * 0.2, rel=1e-6)
    assert (r["qc_small"], r["qc_large"]) == (0, 8)
    # 50745,1951-08-01: large pan 42 (4.2 mm, QC 0), small missing -> 0.5 * 4.2
    r = _row(ds, "50745", "1951-08-01")
    assert r["lat"] == pytest.approx(47 + 20 / 60) and r["lon"] == pytest.approx(123 + 56 / 60)
    assert r["pan_used"] == "large" and r["et"] == pytest.approx(2.1, rel=1e-6)
    # 52203 (Hami) elevation 107700: 770.0 m, estimated
    r = _row(ds, "52203", "1951-01-01")
    assert r["elevation_m"] == pytest.approx(770.0) and r["elevation_estimated"]
    # 56029 (Yushu, Qinghai) has 31 October rows, all missing: kept as NaN rows
    yushu = ds["station_id"].values == "56029"
    assert yushu.sum() == 31 and np.isnan(ds["et"].values[yushu]).all()

    # every row against an independent computation from the CSV
    raw = raw.sort_values(["site", "date"]).reset_index(drop=True)
    big = np.where(raw["QC_ET_big"] == 0, raw["ET_big"] * 0.1, np.nan)
    small = np.where(raw["QC_ET_sml"] == 0, raw["ET_sml"] * 0.1, np.nan)
    expected = np.where(~np.isnan(big), 0.5 * big, 0.35 * small)
    np.testing.assert_allclose(ds["et"].values, expected, rtol=1e-6, equal_nan=True)
    assert int(np.isnan(ds["et"].values).sum()) == int((raw["ET_sml"].isna() & raw["ET_big"].isna()).sum())
    assert (ds["pan_used"].values == "large").sum() == raw["ET_big"].notna().sum() == 1259
    for name in ("et", "pan_evaporation_large", "pan_evaporation_small"):     # no code survives as a number
        assert np.nanmax(ds[name].values) < 100
    assert np.nanmax(ds["elevation_m"].values) < 9000
    # sorted by (station_id, time), unique
    keys = pd.DataFrame({"s": ds["station_id"].values, "t": ds["time"].values})
    assert keys.equals(keys.sort_values(["s", "t"]).reset_index(drop=True)) and not keys.duplicated().any()


@pytest.mark.realdata
def test_real_station_coordinates_change_per_row():
    """56146 (Ganzi) reports elevation 3522.0 m until September and 3320.0 m in October 1951."""
    ds = read_source("cma", realdata_file("cma", TIDIED), settings=load_settings(), bbox=CHINA)
    assert _row(ds, "56146", "1951-01-01")["elevation_m"] == pytest.approx(3522.0)
    assert _row(ds, "56146", "1951-10-01")["elevation_m"] == pytest.approx(3320.0)
    # 51573 (Turpan) moved between July and September: lat 42°55' -> 43°00'
    assert _row(ds, "51573", "1951-07-01")["lat"] == pytest.approx(42 + 55 / 60)
    assert _row(ds, "51573", "1951-09-01")["lat"] == pytest.approx(43.0)


@pytest.mark.realdata
def test_real_sample_clipped_to_default_region():
    path = realdata_file("cma", TIDIED)
    settings = load_settings()
    ds = read_source("cma", path, settings=settings)
    raw = pd.read_csv(path, usecols=["site", "long", "lat"])
    lat = raw["lat"] // 100 + raw["lat"] % 100 / 60
    lon = raw["long"] // 100 + raw["long"] % 100 / 60
    r, m = settings.region, settings.region.margin_deg
    inside = (lon >= r.lon_min - m) & (lon <= r.lon_max + m) & (lat >= r.lat_min - m) & (lat <= r.lat_max + m)
    assert ds.sizes["obs"] == inside.sum() > 0
    assert set(ds["station_id"].values) == set(raw.loc[inside, "site"].astype(str))
    assert "56029" in set(ds["station_id"].values)


def _tidied_to_raw_txt(csv: Path, folder: Path) -> list[Path]:
    """The tidied CSV written back as monthly raw EVP text files, by hand (raw integers, 32766 missing)."""
    df = pd.read_csv(csv, usecols=["site", "date", "long", "lat", "alt", "ET_sml", "ET_big", "QC_ET_sml", "QC_ET_big"])
    paths = []
    for month, part in df.groupby(df["date"].str[:7]):
        day = pd.to_datetime(part["date"])
        small = part["ET_sml"].fillna(32766).astype(int)
        large = part["ET_big"].fillna(32766).astype(int)
        lines = [f"{s} {la} {lo} {al} {d.year} {d.month:2d} {d.day:2d} {sm:5d} {lg:5d} {qs} {ql}"
                 for s, la, lo, al, d, sm, lg, qs, ql in zip(part["site"], part["lat"], part["long"], part["alt"],
                                                            day, small, large, part["QC_ET_sml"], part["QC_ET_big"])]
        path = folder / cma_evp_file_name(int(month[:4]), int(month[5:]))
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


@pytest.mark.realdata
def test_raw_txt_layout_reads_like_the_tidied_csv(tmp_path):
    csv = realdata_file("cma", TIDIED)
    paths = _tidied_to_raw_txt(csv, tmp_path)
    assert len(paths) == 10
    settings = load_settings()
    from_csv = read_source("cma", csv, settings=settings, bbox=CHINA)
    from_txt = read_source("cma", paths, settings=settings, bbox=CHINA)
    assert from_txt.attrs["source_files"].split() == [p.name for p in paths]
    from_txt.attrs["source_files"] = from_csv.attrs["source_files"]
    xr.testing.assert_identical(from_txt, from_csv)


# --------------------------------------------------------------------------- synthetic files: every rule
def test_registered_as_station_reader():
    spec = get_reader("cma")
    assert spec.kind == "stations" and spec.read.__name__ == "read_cma"


def test_writer_raw_layout(tmp_path):
    path = _write(tmp_path, _evp_table())
    assert path.name == "SURF_CLI_CHN_MUL_DAY-EVP-13240-201905.TXT"
    lines = path.read_text().splitlines()
    assert len(lines) == 6
    # Golmud sorts first; 36.4167 N = 36°25', 94.9167 E = 94°55', 2807.6 m estimated -> 128076
    assert lines[0].split() == ["52818", "3625", "9455", "128076", "2019", "5", "1", "40", "30", "0", "0"]
    assert lines[3].split()[:4] == ["52866", "3644", "10145", "22952"]


def test_degree_minutes_elevation_and_pans(tmp_path):
    ds = _read(_write(tmp_path, _evp_table()))
    assert ds.sizes["obs"] == 6
    r = _row(ds, "52866", "2019-05-02")
    assert r["lat"] == pytest.approx(36 + 44 / 60, abs=1e-12) and r["lon"] == pytest.approx(101 + 45 / 60, abs=1e-12)
    assert r["elevation_m"] == pytest.approx(2295.2) and not r["elevation_estimated"]
    assert r["pan_evaporation_large"] == pytest.approx(3.0) and r["pan_evaporation_small"] == pytest.approx(4.0)
    assert r["pan_used"] == "large" and r["et"] == pytest.approx(0.5 * 3.0)
    g = _row(ds, "52818", "2019-05-01")
    assert g["elevation_m"] == pytest.approx(2807.6) and g["elevation_estimated"]
    assert ds["lat"].dtype == np.float64 and ds["elevation_m"].dtype == np.float64
    assert ds["qc_large"].dtype == np.int8 and ds["special_code"].dtype == np.int32
    assert ds["elevation_estimated"].dtype == bool and ds["time"].dtype == np.dtype("datetime64[ns]")
    for name in ds.data_vars:
        assert ds[name].attrs.get("units") and ds[name].attrs.get("long_name"), name


def test_missing_trace_and_pan_preference(tmp_path):
    table = _evp_table({("52866", "2019-05-01", "pan_large_mm"): np.nan,        # small pan used
                        ("52866", "2019-05-02", "pan_large_mm"): 0.03,          # trace -> 0
                        ("52866", "2019-05-03", "pan_large_mm"): np.nan,
                        ("52866", "2019-05-03", "pan_small_mm"): np.nan})       # nothing
    path = _write(tmp_path, table)
    text = path.read_text()
    assert "32700" in text and text.count("32766") == 3
    ds = _read(path)
    r = _row(ds, "52866", "2019-05-01")
    assert r["pan_used"] == "small" and r["et"] == pytest.approx(0.35 * 4.0) and r["qc_large"] == 8
    assert np.isnan(r["pan_evaporation_large"])
    r = _row(ds, "52866", "2019-05-02")
    assert r["pan_evaporation_large"] == 0.0 and r["et"] == 0.0 and r["pan_used"] == "large"
    assert r["special_code"] == 0
    r = _row(ds, "52866", "2019-05-03")
    assert np.isnan(r["et"]) and r["pan_used"] == "" and r["special_code"] == 0


def test_other_special_codes_are_missing_and_reported(tmp_path, caplog):
    table = _evp_table().assign(special_large=0, special_small=0)
    hit = (table["station_id"] == "52818") & (table["date"] == pd.Timestamp("2019-05-02"))
    table.loc[hit, "special_large"] = 32744
    both = (table["station_id"] == "52866") & (table["date"] == pd.Timestamp("2019-05-03"))
    table.loc[both, ["special_large", "special_small"]] = [31000, 30500]
    with caplog.at_level(logging.WARNING, logger="etfuse.sources.cma"):
        ds = _read(_write(tmp_path, table))
    r = _row(ds, "52818", "2019-05-02")
    assert r["special_code"] == 32744 and np.isnan(r["pan_evaporation_large"])
    assert r["pan_used"] == "small" and r["et"] == pytest.approx(0.35 * 4.0)
    r = _row(ds, "52866", "2019-05-03")
    assert r["special_code"] == 31000 and np.isnan(r["et"])
    assert (ds["special_code"].values != 0).sum() == 2
    for name in ("et", "pan_evaporation_large", "pan_evaporation_small"):
        assert np.nanmax(ds[name].values) < 100
    assert "3 pan values were special codes" in caplog.text and "32744x1" in caplog.text


def test_qc_filtering(tmp_path):
    table = _evp_table({("52866", "2019-05-01", "qc_large"): 2,   # wrong -> dropped, small used
                        ("52866", "2019-05-02", "qc_large"): 1,   # suspect -> kept by default
                        ("52866", "2019-05-03", "qc_small"): 4,
                        ("52866", "2019-05-03", "pan_large_mm"): np.nan})
    path = _write(tmp_path, table)
    ds = _read(path)
    r = _row(ds, "52866", "2019-05-01")
    assert r["qc_large"] == 2 and np.isnan(r["pan_evaporation_large"]) and r["pan_used"] == "small"
    assert _row(ds, "52866", "2019-05-02")["et"] == pytest.approx(1.5)
    assert _row(ds, "52866", "2019-05-03")["et"] == pytest.approx(0.35 * 4.0)
    strict = _read(path, cma={"accepted_qc": (0,)})
    assert _row(strict, "52866", "2019-05-02")["pan_used"] == "small"
    assert np.isnan(_row(strict, "52866", "2019-05-03")["et"])


def test_coefficient_file_per_station_and_month(tmp_path):
    coefficients = tmp_path / "coef.csv"
    coefficients.write_text("station_id,month,pan,coefficient\n52866,5,large,0.8\n52866,6,large,0.1\n"
                            "52818,5,small,0.6\n")
    table = _evp_table({("52818", "2019-05-01", "pan_large_mm"): np.nan})
    ds = _read(_write(tmp_path, table), cma={"coefficient_file": coefficients,
                                             "pan_coefficient_large": 0.7, "pan_coefficient_small": 0.3})
    assert _row(ds, "52866", "2019-05-01")["et"] == pytest.approx(0.8 * 3.0)       # station-month override
    assert _row(ds, "52818", "2019-05-01")["et"] == pytest.approx(0.6 * 4.0)       # small override
    assert _row(ds, "52818", "2019-05-02")["et"] == pytest.approx(0.7 * 3.0)       # default large
    assert "coef.csv" in ds.attrs["pan_coefficients"]


@pytest.mark.parametrize("content, match", [
    ("station_id,month,pan,coefficient\n52866,13,large,0.8\n", r"line 2: bad month"),
    ("station_id,month,pan,coefficient\n52866,5,medium,0.8\n", r"line 2: bad pan"),
    ("station_id,month,pan,coefficient\n52866,5,large,0.8\n52866,5,large,0.9\n", r"line 3: repeated"),
    ("station,month,coefficient\n52866,5,0.8\n", r"not a pan coefficient table"),
])
def test_bad_coefficient_file(tmp_path, content, match):
    coefficients = tmp_path / "coef.csv"
    coefficients.write_text(content)
    with pytest.raises(SourceFormatError, match=match):
        _read(_write(tmp_path, _evp_table()), cma={"coefficient_file": coefficients})


@pytest.mark.parametrize("bad_line, match", [
    ("52866  3644 10145  22952 2019  5  4    40    30 0", r"EVP-13240-201905\.TXT: line 8: 10 columns; expected 11"),
    ("52866  3644 10145  22952 2019  5  4    40   3.5 0 0", r"EVP-13240-201905\.TXT.*line 8: bad value in column 'pan_large'"),
    ("52866  3644 10145  22952 2019  2 30    40    30 0 0", r"EVP-13240-201905\.TXT.*line 8: no such date"),
    ("52866  3675 10145  22952 2019  5  4    40    30 0 0", r"EVP-13240-201905\.TXT.*line 8: not degrees\*100\+minutes"),
    ("52866  3644 10145  22952 2019  5  4    40    30 0 12", r"EVP-13240-201905\.TXT.*line 8: bad QC code"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad_line, match):
    path = _write(tmp_path, _evp_table())
    path.write_text(path.read_text() + "\n" + bad_line + "\n")       # a blank line 7, the bad line 8
    with pytest.raises(SourceFormatError, match=match):
        _read(path)


def test_crlf_and_layout_detected_by_content(tmp_path):
    txt = _write(tmp_path, _evp_table())
    renamed = tmp_path / "evp.csv"
    renamed.write_bytes(txt.read_text().replace("\n", "\r\n").encode())
    a, b = _read(txt), _read(renamed)
    b.attrs["source_files"] = a.attrs["source_files"]
    assert a.identical(b)
    tidied = tmp_path / "tidied.TXT"
    tidied.write_text("site,date,long,lat,alt,ET_sml,ET_big,QC_ET_sml,QC_ET_big,Tavg\n"
                      "52866,2019-05-01,10145,3644,22952,40,,0,8,123\n")
    r = _row(_read(tidied), "52866", "2019-05-01")
    assert r["et"] == pytest.approx(0.35 * 4.0) and r["lat"] == pytest.approx(36 + 44 / 60)


def test_tidied_csv_rejects_converted_units(tmp_path):
    path = tmp_path / "tidied.csv"
    path.write_text("site,date,long,lat,alt,ET_sml,ET_big,QC_ET_sml,QC_ET_big\n"
                    "52866,2019-05-01,10145,3644,22952,4.2,,0,8\n")
    with pytest.raises(SourceFormatError, match=r"line 2: bad value in column 'pan_small'; expected an integer"):
        _read(path)
    path.write_text("site,date,long,lat,ET_sml,ET_big\n52866,2019-05-01,10145,3644,40,\n")
    with pytest.raises(SourceFormatError, match=r"CSV without column\(s\) \['alt', 'QC_ET_sml', 'QC_ET_big'\]"):
        _read(path)


def test_round_trip_within_quantisation(tmp_path):
    rng = np.random.default_rng(7)
    table = _evp_table()
    table["pan_large_mm"] = rng.uniform(0.1, 12.0, len(table))
    table["pan_small_mm"] = rng.uniform(0.1, 15.0, len(table))
    table.loc[[1, 4], "pan_large_mm"] = np.nan
    ds = _read(_write(tmp_path, table))
    table = table.sort_values(["station_id", "date"]).reset_index(drop=True)
    np.testing.assert_array_equal(ds["station_id"].values, table["station_id"].to_numpy(dtype=str))
    np.testing.assert_array_equal(ds["time"].values, table["date"].to_numpy(dtype="datetime64[ns]"))
    np.testing.assert_allclose(ds["lat"].values, table["lat"], atol=1 / 120 + 1e-9)
    np.testing.assert_allclose(ds["lon"].values, table["lon"], atol=1 / 120 + 1e-9)
    np.testing.assert_allclose(ds["elevation_m"].values, table["elevation_m"], atol=0.05 + 1e-9)
    np.testing.assert_array_equal(ds["elevation_estimated"].values, table["elevation_estimated"])
    for pan in ("large", "small"):
        np.testing.assert_allclose(ds[f"pan_evaporation_{pan}"].values, table[f"pan_{pan}_mm"], atol=0.05 + 1e-6)
    expected = np.where(table["pan_large_mm"].notna(), 0.5 * table["pan_large_mm"], 0.35 * table["pan_small_mm"])
    np.testing.assert_allclose(ds["et"].values, expected, atol=0.5 * 0.05 + 1e-6)


def test_bbox_clipping_and_no_overlap(tmp_path):
    path = _write(tmp_path, _evp_table())
    settings = load_settings()
    east = read_source("cma", path, settings=settings, bbox=(100.0, 30.0, 104.0, 40.0))
    assert set(east["station_id"].values) == {"52866"} and east.sizes["obs"] == 3
    assert _read(path, region="test").sizes["obs"] == 3          # Xining inside, Golmud outside
    with pytest.raises(NoOverlapError, match=r"EVP-13240-201905\.TXT: no station .* inside the region; "
                                             r"expected stations inside lon 0\.\.1, lat 0\.\.1, found 2 station"):
        read_source("cma", path, settings=settings, bbox=(0, 0, 1, 1))


def test_repeated_station_day(tmp_path):
    table = _evp_table()
    may = _write(tmp_path, table)
    same = write_cma_evp_month(tmp_path / "copy" / may.name, table)
    assert read_source("cma", [may, same], settings=load_settings()).sizes["obs"] == 6
    changed = write_cma_evp_month(tmp_path / "changed" / may.name, _evp_table({("52866", "2019-05-02", "pan_large_mm"): 9.0}))
    with pytest.raises(SourceFormatError, match=r"station 52866 day 2019-05-02 appears 2 times with different values"):
        read_source("cma", [may, changed], settings=load_settings())


def test_empty_or_binary_file(tmp_path):
    empty = tmp_path / cma_evp_file_name(2019, 6)
    empty.write_text("\n")
    with pytest.raises(SourceFormatError, match="no data lines"):
        _read(empty)
    binary = tmp_path / cma_evp_file_name(2019, 7)
    binary.write_bytes(b"\x89HDF\r\n\x1a\n\xff\xfe")
    with pytest.raises(SourceFormatError, match="not a UTF-8/ASCII text file"):
        _read(binary)
