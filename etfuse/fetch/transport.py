"""fsspec file systems for the pull plug-ins (``remote``, ``gleam``): connect with credentials,
list, and copy one file block by block with a stall timeout, mapping every library's failure to
an error an operator acts on (etfuse/fetch/errors.py).

SFTP goes through ``sshfs`` (asyncssh): the server's host key must be in ``known_hosts``
(``~/.ssh/known_hosts`` unless configured); HTTP(S) through aiohttp, which cannot seek in a
plain directory listing's files, so an HTTP transfer restarts instead of resuming.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fsspec

from etfuse.fetch.credentials import Login
from etfuse.fetch.download import call_with_timeout
from etfuse.fetch.errors import (ConfigurationError, CredentialsError, FetchError, ProviderDownError, QuotaError,
                                 RequestRefusedError, TransferError)


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int | None
    #: size and modification time (or ETag): changes whenever the provider replaces the file
    version: str


def public_url(url: str) -> str:
    """``url`` without any user name or password (what logs, alerts and the ledger show)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return parts._replace(netloc=host).geturl()


def classify(exc: BaseException, source: str, where: str, *, transfer: bool = False) -> FetchError:
    """The fetch error for a library exception raised while ``where``."""
    if isinstance(exc, FetchError):
        return exc
    name = type(exc).__name__
    status = getattr(exc, "status", None) or getattr(getattr(exc, "response", None), "status_code", None)
    try:
        import asyncssh
        if isinstance(exc, asyncssh.PermissionDenied):
            return CredentialsError(source, f"{where}: the server refused the login (wrong user name or "
                                            "password); check the credentials (docs/operations.md, Fetching)")
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            return ConfigurationError(source, f"{where}: the server's host key is not in known_hosts; add it "
                                              "(ssh-keyscan) or set fetch.<source>.known_hosts")
    except ImportError:  # pragma: no cover - asyncssh is a dependency
        pass
    if isinstance(exc, PermissionError) and not transfer:      # sshfs's form of asyncssh.PermissionDenied
        return CredentialsError(source, f"{where}: permission denied ({exc}); check the user name and password "
                                        "(docs/operations.md, Fetching)")
    if status in (401, 403):
        return CredentialsError(source, f"{where}: HTTP {status}: credentials missing or refused")
    if status == 429:
        return QuotaError(source, f"{where}: HTTP 429: the provider's rate limit or quota is used up")
    if isinstance(status, int) and 400 <= status < 500:
        return RequestRefusedError(source, f"{where}: HTTP {status}: the request was refused")
    if isinstance(exc, FileNotFoundError) and not transfer:
        return ConfigurationError(source, f"{where}: no such folder or file upstream ({exc})")
    if transfer:
        return TransferError(source, f"{where}: the transfer broke off ({name}: {exc})")
    return ProviderDownError(source, f"{where}: the provider cannot be reached ({name}: {exc})")


class PullTransport:
    """One fsspec file system at ``url`` with a login; a new connection for every attempt."""

    def __init__(self, source: str, url: str, *, login: Login | None, timeout_s: float, block_bytes: int,
                 known_hosts: Path | None = None) -> None:
        self.source, self.url, self.login = source, url, login
        self.timeout_s, self.block_bytes = timeout_s, block_bytes
        self.known_hosts = known_hosts
        parts = urlsplit(url)
        self.protocol = parts.scheme or "file"
        self.host, self.port, self.user = parts.hostname, parts.port, parts.username
        self.root = parts.path if self.protocol in ("sftp", "ssh", "file") else (
            f"{parts.netloc}{parts.path}" if self.protocol in ("s3", "gs") else public_url(url))
        self._fs: Any = None

    def _options(self) -> dict[str, Any]:
        if self.protocol in ("sftp", "ssh"):
            options: dict[str, Any] = {"host": self.host, "port": self.port or 22,
                                       "connect_timeout": self.timeout_s, "login_timeout": self.timeout_s}
            if self.login and self.login.password:      # password login only: no keys, no agent
                options.update(username=self.login.username, password=self.login.password, client_keys=None,
                               agent_path=None)
            elif self.login or self.user:              # key login (~/.ssh keys or the agent)
                options["username"] = self.login.username if self.login else self.user
            # sshfs would skip host key checks when known_hosts is not given: always give it
            known_hosts = Path(self.known_hosts or Path.home() / ".ssh" / "known_hosts").expanduser()
            if not known_hosts.is_file():
                raise ConfigurationError(self.source, f"no known_hosts file at {known_hosts}: add the server's host key "
                                                      "(ssh-keyscan -p PORT HOST >> it) or set "
                                                      f"fetch.{self.source}.known_hosts")
            options["known_hosts"] = str(known_hosts)
            return options
        if self.protocol in ("http", "https") and self.login:
            import base64
            token = base64.b64encode(f"{self.login.username}:{self.login.password}".encode()).decode()
            return {"client_kwargs": {"headers": {"Authorization": f"Basic {token}"}}}
        return {}

    def fs(self):
        if self._fs is None:
            where = f"connecting to {public_url(self.url)}"
            try:
                self._fs = call_with_timeout(
                    lambda: fsspec.filesystem(self.protocol, skip_instance_cache=True, **self._options()),
                    self.timeout_s, source=self.source, what=where)
            except TransferError as exc:
                raise ProviderDownError(self.source, str(exc).split(": ", 1)[-1]) from None
            except Exception as exc:  # noqa: BLE001 - mapped to what the operator acts on
                raise classify(exc, self.source, where) from None
        return self._fs

    def reset(self) -> None:
        """Close and drop the connection (after a failure the next attempt connects anew)."""
        fs, self._fs = self._fs, None
        if fs is not None and hasattr(fs, "_finalize") and hasattr(fs, "_pool"):     # sshfs
            try:
                fs._finalize(fs.loop, fs._pool, fs._stack)
            except Exception:  # noqa: BLE001 - a broken connection may not close cleanly
                pass

    def _call(self, fn, what: str, *, transfer: bool = False):
        try:
            return call_with_timeout(fn, self.timeout_s, source=self.source, what=what)
        except FetchError:
            self.reset()
            raise
        except Exception as exc:  # noqa: BLE001
            self.reset()
            raise classify(exc, self.source, what, transfer=transfer) from None

    def origin_of(self, path: str) -> str:
        """The credential-free URL of a listed ``path`` (what the ledger records)."""
        if "://" in path:
            return public_url(path)
        if self.protocol in ("s3", "gs"):              # listed paths start with the bucket
            return f"{self.protocol}://{path.lstrip('/')}"
        netloc = (self.host or "") + (f":{self.port}" if self.port else "")
        return f"{self.protocol}://{netloc}/{path.lstrip('/')}"

    def glob(self, pattern: str) -> list[RemoteFile]:
        """Files matching a glob below the root (``*`` within one folder level)."""
        fs = self.fs()
        base = self.root.rstrip("/")
        found = self._call(lambda: fs.glob(f"{base}/{pattern.lstrip('/')}", detail=True),
                           f"listing {public_url(self.url)}")
        return [self._remote(path, info) for path, info in sorted(found.items()) if info.get("type") != "directory"]

    def listing(self, pattern: str, *, recursive: bool) -> list[RemoteFile]:
        """Files below the root whose name matches ``pattern``."""
        fs = self.fs()
        what = f"listing {public_url(self.url)}"
        if self.protocol in ("http", "https"):
            entries = self._call(lambda: fs.ls(self.root, detail=True), what)
            files = [e["name"] for e in entries if e.get("type") != "directory"
                     and fnmatch.fnmatch(e["name"].rstrip("/").rsplit("/", 1)[-1], pattern)]
            return [self._remote(f, self._call(lambda f=f: fs.info(f), f"asking the size of {f}")) for f in files]
        found = self._call(lambda: fs.find(self.root, maxdepth=None if recursive else 1, detail=True), what)
        return [self._remote(path, info) for path, info in sorted(found.items())
                if info.get("type") != "directory" and fnmatch.fnmatch(path.rsplit("/", 1)[-1], pattern)]

    @staticmethod
    def _remote(path: str, info: dict) -> RemoteFile:
        size = info.get("size")
        stamp = info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("etag") \
            or info.get("last_modified") or info.get("created")
        return RemoteFile(path=path, size=int(size) if size is not None else None,
                          version=f"size={size};mtime={stamp}")

    def copy(self, path: str, partial: Path, *, offset: int, progress) -> None:
        """Copy ``path`` into ``partial`` from byte ``offset`` (or from 0 when it cannot seek)."""
        fs = self.fs()
        what = f"downloading {public_url(self.url)} {path.rsplit('/', 1)[-1]}"
        remote = self._call(lambda: fs.open(path, "rb", **({"block_size": 0} if self.protocol.startswith("http")
                                                            else {})), what, transfer=True)
        try:
            if offset:
                try:
                    remote.seek(offset)           # local: the next read asks from there
                except Exception:  # noqa: BLE001 - not seekable (an HTTP stream): start over
                    offset = 0
            done = offset
            with open(partial, "r+b" if offset else "wb") as out:
                out.seek(offset)
                out.truncate()
                while True:
                    block = self._call(lambda: remote.read(self.block_bytes), what, transfer=True)
                    if not block:
                        break
                    out.write(block)
                    done += len(block)
                    progress(done, None)
        finally:
            try:                       # closing waits for the server too: bounded like every call
                call_with_timeout(remote.close, self.timeout_s, source=self.source, what="closing")
            except Exception:  # noqa: BLE001 - closing a broken or stalled connection may fail too
                pass
