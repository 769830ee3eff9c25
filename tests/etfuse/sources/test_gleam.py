"""GLEAM: either dimension order, descending latitude, -999 or NaN fill, v3 and v4 files."""

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from etfuse.errors import SourceFormatError
from etfuse.sources import read_source
from etfuse.sources.gleam import gleam_version
from etfuse.synth.writers_grids import write_gleam_year

BBOX = (100.0, 36.0, 101.0, 37.0)


def gleam_field(days=5, res=0.25, seed=0) -> xr.DataArray:
    lat = np.arange(37.375, 35.6, -res)
    lon = np.arange(99.625, 101.4, res)
    values = np.random.default_rng(seed).uniform(0, 5, (days, lat.size, lon.size)).astype(np.float32)
    values[2, 3, 4] = np.nan
    return xr.DataArray(values, dims=("time", "lat", "lon"),
                        coords={"time": pd.date_range("2020-06-01", periods=days), "lat": lat, "lon": lon})


@pytest.mark.parametrize("order,version,fill", [(("time", "lon", "lat"), "v3.7a", -999.0),
                                                 (("time", "lat", "lon"), "v4.2a", np.nan)])
def test_both_layouts_read_by_name(order, version, fill, tmp_path, settings):
    field = gleam_field()
    path = tmp_path / f"E_2020_GLEAM_{version}.nc"
    write_gleam_year(path, field, version=version, dim_order=order, fill=fill)
    with netCDF4.Dataset(path) as nc:
        assert nc["E"].dimensions == order
    ds = read_source("gleam", path, settings=settings, bbox=BBOX)
    assert ds["et"].dims == ("time", "lat", "lon")
    assert ds["lat"].values[0] > ds["lat"].values[-1]
    sub = field.sel(lat=ds["lat"].values, lon=ds["lon"].values, method="nearest")
    np.testing.assert_allclose(ds["et"].values, sub.values, equal_nan=True)
    assert np.isnan(ds["et"].sel(time="2020-06-03", lat=field.lat[3], lon=field.lon[4], method="nearest"))
    assert ds.attrs["gleam_version"] == version and ds["et"].attrs["units"] == "kg m-2"


def test_undeclared_minus_999_is_treated_as_fill(tmp_path, settings):
    field = gleam_field().fillna(-999.0)
    path = tmp_path / "E_2020_GLEAM_v3.7a.nc"
    ds_in = field.to_dataset(name="E")
    ds_in["E"].attrs["units"] = "mm/day"
    ds_in.to_netcdf(path, encoding={"E": {"_FillValue": None}})
    with netCDF4.Dataset(path) as nc:
        assert "_FillValue" not in nc["E"].ncattrs() and (nc["E"][:] == -999.0).sum() == 1
    ds = read_source("gleam", path, settings=settings, bbox=BBOX)
    assert np.nanmin(ds["et"].values) >= 0 and np.isnan(ds["et"].values).sum() == 1


def test_ascending_latitude_is_flipped(tmp_path, settings):
    field = gleam_field().isel(lat=slice(None, None, -1))
    path = tmp_path / "E_2020_GLEAM_v4.2a.nc"
    write_gleam_year(path, field, dim_order=("time", "lat", "lon"))
    ds = read_source("gleam", path, settings=settings, bbox=BBOX)
    assert np.all(np.diff(ds["lat"].values) < 0)


def test_two_years_concatenate_and_overlap_is_refused(tmp_path, settings):
    a, b = gleam_field(days=3), gleam_field(days=3, seed=1)
    b = b.assign_coords(time=pd.date_range("2021-01-01", periods=3))
    write_gleam_year(tmp_path / "E_2020_GLEAM_v3.7a.nc", a)
    write_gleam_year(tmp_path / "E_2021_GLEAM_v3.7a.nc", b)
    ds = read_source("gleam", sorted(tmp_path.glob("E_*.nc")), settings=settings, bbox=BBOX)
    assert ds.sizes["time"] == 6
    write_gleam_year(tmp_path / "E_2020_GLEAM_v3.8a.nc", a)
    with pytest.raises(SourceFormatError, match="overlap in time"):
        read_source("gleam", [tmp_path / "E_2020_GLEAM_v3.7a.nc", tmp_path / "E_2020_GLEAM_v3.8a.nc"],
                    settings=settings, bbox=BBOX)


def test_errors_name_file_variable_and_expectation(tmp_path, settings):
    field = gleam_field()
    path = tmp_path / "Ep_2020_GLEAM_v3.7a.nc"
    write_gleam_year(path, field)
    with netCDF4.Dataset(path, "a") as nc:
        nc.renameVariable("E", "Ep")
    with pytest.raises(SourceFormatError, match=r"Ep_2020_GLEAM_v3\.7a\.nc: variable 'E': no actual evaporation .* found \['Ep'\]"):
        read_source("gleam", path, settings=settings, bbox=BBOX)
    path2 = tmp_path / "E_2020_GLEAM_v3.7a.nc"
    write_gleam_year(path2, field)
    with netCDF4.Dataset(path2, "a") as nc:
        nc["E"].units = "m/day"
    with pytest.raises(SourceFormatError, match=r"unexpected units; expected one of .*mm/day.*found 'm/day'"):
        read_source("gleam", path2, settings=settings, bbox=BBOX)


def test_version_from_file_name():
    from pathlib import Path
    assert gleam_version(Path("E_2020_GLEAM_v3.7a.nc")) == "v3.7a"
    assert gleam_version(Path("E_2020_GLEAM_v4.2a.nc")) == "v4.2a"
    assert gleam_version(Path("gleam.nc")) is None
