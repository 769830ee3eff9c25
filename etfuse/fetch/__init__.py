"""Acquisition: bring each provider's new files into ``landing/<source>/``.

One plug-in per provider, each registered under a short name like the readers
(etfuse/sources/__init__.py): ``era5land`` (Copernicus CDS), ``modis`` (NASA Earthdata),
``gleam`` (SFTP), ``remote`` (any fsspec URL).  A plug-in only knows its provider: what is new
(``plan``) and how to write one file's bytes (``download``).  Everything else is shared and lives
in one place: the partial name, resume, size and checksum checks, the atomic rename, retries
(etfuse/fetch/download.py), the ledger (etfuse/fetch/ledger.py) and the run with its alerts
(etfuse/fetch/run.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from importlib import import_module
from pathlib import Path
from typing import Any, Callable

from etfuse.errors import UnknownNameError
from etfuse.settings import Settings

#: the plug-in modules of this package (each registers itself on import)
PLUGINS = ("era5land", "modis", "gleam", "remote")

#: ``progress(bytes_done, bytes_total_or_None)``
Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class FetchItem:
    """One provider file to bring into ``landing/<target>/<name>``."""

    source: str
    target: str
    name: str
    #: where it comes from, without credentials (a URL, or the CDS dataset and days)
    origin: str
    #: what identifies this version upstream (size and modification time, ETag, ERA5 stream)
    version: str
    #: bytes the provider announces; None = unknown (then only the checksum, if any, is checked)
    size: int | None = None
    #: ``"<algorithm>:<hex>"`` when the provider publishes one (md5, sha256)
    checksum: str | None = None
    #: the data days the file holds, when known (ISO dates)
    days: tuple[str, ...] = ()
    #: ERA5T (preliminary) data, to be asked for again once final
    provisional: bool = False
    #: provider details the plug-in needs to download it (a CDS request, a granule)
    detail: Any = field(default=None, compare=False, repr=False)


class Fetcher:
    """Base of the plug-ins.  ``client`` replaces the provider's client library (tests)."""

    name: str = ""
    #: a download can continue a partial file from its length
    resumable: bool = False

    def __init__(self, settings: Settings, *, client: Any = None) -> None:
        self.settings = settings
        self.client = client

    @property
    def config(self):
        return getattr(self.settings.fetch, self.name)

    @property
    def target(self) -> str:
        """The landing folder (reader name) the files go to."""
        return self.name

    def plan(self, *, since: date | None, until: date | None, today: date, ledger) -> list[FetchItem]:
        """The files not fetched yet (in the order to fetch them)."""
        raise NotImplementedError

    def download(self, item: FetchItem, partial: Path, *, offset: int, progress: Progress) -> None:
        """Write ``item``'s bytes to ``partial``, continuing from ``offset`` bytes when > 0."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


_REGISTRY: dict[str, type[Fetcher]] = {}


def register(cls: type[Fetcher]) -> type[Fetcher]:
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise RuntimeError(f"fetch plug-in {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    for module in PLUGINS:
        import_module(f"{__name__}.{module}")


def fetcher_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_fetcher(name: str) -> type[Fetcher]:
    _load_all()
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown fetch source {name!r}; expected one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]
