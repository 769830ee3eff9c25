"""Provider files -> harmonised datasets -> a file for inspection or the harmonised store."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import xarray as xr

from etfuse.settings import Settings
from etfuse.sources import BBox, get_reader, read_source
from etfuse.sources.common import file_sha256
from etfuse.store import DayChange, HarmonisedStore
from etfuse.tempfiles import temporary_name


def harmonise_to_file(source: str, files: Sequence[Path], out: Path, *, settings: Settings,
                      bbox: BBox | None = None) -> str:
    """Write the harmonised result of ``files``: NetCDF for grids, CSV for stations.  Returns a summary."""
    from etfuse.stations_meta import stations_to_frame

    spec = get_reader(source)
    ds = read_source(source, list(files), settings=settings, bbox=bbox)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(out)
    if spec.kind == "grid":
        encoding = {v: {"zlib": True, "complevel": 4} for v in ds.data_vars}
        ds.to_netcdf(tmp, encoding=encoding)
        what = (f"{ds.sizes['time']} days x {ds.sizes['lat']} x {ds.sizes['lon']} cells, "
                f"variables {', '.join(map(str, ds.data_vars))}")
    else:
        frame = stations_to_frame(ds)
        frame.to_csv(tmp, index=False, float_format="%.3f")
        what = f"{len(frame)} station-days from {frame['station_id'].nunique()} stations"
    tmp.replace(out)
    return f"{source}: {what} -> {out}"


def harmonise_into_store(source: str, path: Path, store: HarmonisedStore, *, settings: Settings,
                         bbox: BBox | None = None) -> tuple[xr.Dataset, list[DayChange]]:
    """Read one provider file and store its days; returns the dataset and what changed per day."""
    spec = get_reader(source)
    ds = read_source(source, [path], settings=settings, bbox=bbox)
    digest = file_sha256(path)
    put = store.put_grid if spec.kind == "grid" else store.put_stations
    return ds, put(source, ds, file_name=Path(path).name, file_sha256=digest)
