"""``remote``: a generic pull from any fsspec URL (``sftp://``, ``s3://``, an ``https://`` listing)
with a file-name pattern, into ``landing/<fetch.remote.target>/``.  For CMA drops and mirrors.

A file is new when its path, or its size and modification time, differ from every ledger row: a
provider that replaces a file gets it fetched again; an unchanged file never is.  Nothing upstream
is ever deleted or changed.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

from etfuse.fetch import Fetcher, FetchItem, Progress, register
from etfuse.fetch.credentials import login
from etfuse.fetch.errors import ConfigurationError
from etfuse.fetch.transport import PullTransport, RemoteFile
from etfuse.settings import Settings


class PullFetcher(Fetcher):
    """What ``remote`` and ``gleam`` share: a transport, ledger-based novelty, and block copies."""

    resumable = True
    #: environment prefix of the login: ``<PREFIX>_USERNAME`` / ``<PREFIX>_PASSWORD``
    credential_prefix = "ETFUSE_REMOTE"

    def __init__(self, settings: Settings, *, client=None) -> None:
        super().__init__(settings, client=client)
        if not self.config.url:
            raise ConfigurationError(self.name, f"fetch.{self.name}.url is not set (e.g. sftp://host:22/path)")
        self._transport: PullTransport | None = client

    @property
    def transport(self) -> PullTransport:
        if self._transport is None:
            url = self.config.url
            self._transport = PullTransport(
                self.name, url, login=login(self.settings, self.credential_prefix, urlsplit(url).hostname),
                timeout_s=self.config.timeout_s, block_bytes=self.settings.fetch.block_bytes,
                known_hosts=self.config.known_hosts)
        return self._transport

    def remote_files(self, *, since: date | None, until: date | None) -> list[RemoteFile]:
        raise NotImplementedError

    def plan(self, *, since: date | None, until: date | None, today: date, ledger) -> list[FetchItem]:
        items = []
        for remote in self.remote_files(since=since, until=until):
            origin = self.transport.origin_of(remote.path)
            if ledger.has(self.name, origin, remote.version):
                continue
            items.append(FetchItem(source=self.name, target=self.target, name=Path(remote.path).name, origin=origin,
                                   version=remote.version, size=remote.size, detail=remote.path))
        return items

    def download(self, item: FetchItem, partial: Path, *, offset: int, progress: Progress) -> None:
        self.transport.copy(item.detail, partial, offset=offset, progress=progress)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.reset()


@register
class RemoteFetcher(PullFetcher):
    """Files matching ``fetch.remote.pattern`` below ``fetch.remote.url``."""

    name = "remote"

    @property
    def target(self) -> str:
        from etfuse.sources import reader_names
        target = self.config.target
        if target not in reader_names():
            raise ConfigurationError(self.name, f"fetch.remote.target {target!r} is not a source; expected one of "
                                                f"{reader_names()}")
        return target

    def remote_files(self, *, since: date | None, until: date | None) -> list[RemoteFile]:
        return self.transport.listing(self.config.pattern, recursive=self.config.recursive)
