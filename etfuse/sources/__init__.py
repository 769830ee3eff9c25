"""Provider readers, one module per provider, each registered under a short name.

A reader turns provider files into daily harmonised data (etfuse.cf vocabulary, CF attributes):

* gridded sources -> ``xr.Dataset`` with dims ``(time, lat, lon)``, latitude descending, the
  source's native grid clipped to the region plus a margin;
* station sources -> ``xr.Dataset`` in long form (CF ``featureType=point``), one row per
  station-day along ``obs``: ``station_id``, ``time``, ``lat``, ``lon`` (coordinates),
  ``elevation_m`` and ``et`` [kg m-2] (data variables; missing station-days kept as NaN).

Names are resolved only here (``get_reader``); each module registers itself on import.
"""

from __future__ import annotations

from dataclasses import dataclass
import pkgutil
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Sequence

import xarray as xr

from etfuse.errors import UnknownNameError

if TYPE_CHECKING:
    from etfuse.settings import Settings

BBox = tuple[float, float, float, float]
ReaderFn = Callable[..., xr.Dataset]


@dataclass(frozen=True)
class ReaderSpec:
    name: str
    kind: Literal["grid", "stations"]
    #: ``fn(paths, *, settings, bbox) -> xr.Dataset``
    read: Callable[..., xr.Dataset]
    description: str


_REGISTRY: dict[str, ReaderSpec] = {}


def register(name: str, kind: Literal["grid", "stations"], description: str):
    def wrap(fn: Callable[..., xr.Dataset]) -> Callable[..., xr.Dataset]:
        if name in _REGISTRY and _REGISTRY[name].read is not fn:
            raise RuntimeError(f"reader {name!r} registered twice")
        _REGISTRY[name] = ReaderSpec(name, kind, fn, description)
        return fn
    return wrap


def _load_all() -> None:
    """Import every reader module of this package once; each registers itself."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name != "common":
            import_module(f"{__name__}.{info.name}")


def reader_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_reader(name: str) -> ReaderSpec:
    _load_all()
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown source {name!r}; expected one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def read_source(name: str, paths: Sequence[Path | str] | Path | str, *, settings: Settings,
                bbox: BBox | None = None) -> xr.Dataset:
    """Read provider files with the reader registered as ``name``.

    ``bbox`` (west, south, east, north) [degrees] replaces the region plus margin for clipping;
    gridded readers raise ``NoOverlapError`` when nothing falls inside it.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no such file(s): {', '.join(missing)}")
    return get_reader(name).read(paths, settings=settings, bbox=bbox)
