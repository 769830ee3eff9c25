"""The canonical variable vocabulary and its CF attributes.

Every harmonised dataset uses these names; units live in the attributes (and in column names of
station tables, e.g. ``et_mm``).  1 kg m-2 of water = 1 mm.
"""

from __future__ import annotations

from typing import Any

import xarray as xr

CONVENTIONS = "CF-1.11"

VARIABLES: dict[str, dict[str, str]] = {
    "et": {"standard_name": "water_evapotranspiration_amount", "units": "kg m-2",
           "long_name": "actual evapotranspiration, daily total, positive for evaporation",
           "cell_methods": "time: sum"},
    "net_radiation": {"units": "MJ m-2", "cell_methods": "time: sum",
                      "long_name": "surface net radiation (net solar + net thermal), daily total, positive downward"},
    "skt": {"standard_name": "surface_temperature", "units": "K", "cell_methods": "time: mean",
            "long_name": "skin temperature, daily mean"},
    "t2m": {"standard_name": "air_temperature", "units": "K", "cell_methods": "time: mean",
            "long_name": "2 m air temperature, daily mean"},
    "precipitation": {"standard_name": "precipitation_amount", "units": "kg m-2", "cell_methods": "time: sum",
                      "long_name": "total precipitation, daily total"},
    "lst": {"standard_name": "surface_temperature", "units": "K", "cell_methods": "time: point",
            "long_name": "MODIS daytime land surface temperature (about 10:30 local solar time)"},
    "pan_evaporation_large": {"units": "kg m-2", "cell_methods": "time: sum",
                              "long_name": "E601B large pan evaporation, CMA day (20:00 to 20:00 Beijing time)"},
    "pan_evaporation_small": {"units": "kg m-2", "cell_methods": "time: sum",
                              "long_name": "20 cm small pan evaporation, CMA day (20:00 to 20:00 Beijing time)"},
    "elevation": {"standard_name": "height_above_mean_sea_level", "units": "m", "long_name": "elevation"},
}

COORDINATES: dict[str, dict[str, str]] = {
    "lat": {"standard_name": "latitude", "units": "degrees_north", "long_name": "latitude of cell centre"},
    "lon": {"standard_name": "longitude", "units": "degrees_east", "long_name": "longitude of cell centre"},
    "time": {"standard_name": "time", "long_name": "day (UTC), labelled at its start"},
}


def annotate(ds: xr.Dataset, **global_attrs: Any) -> xr.Dataset:
    """Set CF attributes on every known variable and coordinate, and the given global ones."""
    for name, attrs in VARIABLES.items():
        if name in ds.variables:
            ds[name].attrs.update(attrs)
    for name, attrs in COORDINATES.items():
        if name in ds.coords:
            ds[name].attrs.update(attrs)
    ds.attrs.setdefault("Conventions", CONVENTIONS)
    ds.attrs.update({k: v for k, v in global_attrs.items() if v is not None})
    return ds
