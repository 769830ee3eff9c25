"""Temporary files of atomic writers, and the removal of those whose writer died.

Every store writes a file beside its final name first and ``os.replace``s it into place, so a
reader never sees half a file.  A writer killed between the two leaves the temporary file
behind; its name, ``.<name>.<host>.<pid>.<random>.tmp``, says who wrote it, so the next store
that opens the folder can tell a dead writer of this host (remove now) from a live one or one on
another host sharing the folder (remove only once it is older than any write can take).
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterable
from pathlib import Path

_NAME = re.compile(r"^\..+\.(?P<host>[^.]+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def host_tag() -> str:
    """This host's name as it appears in temporary names (no dots, so the name stays parseable)."""
    return socket.gethostname().replace(".", "-") or "host"


def temporary_name(path: Path) -> Path:
    """``.<name>.<host>.<pid>.<random>.tmp`` beside ``path``: hidden, never matches a final name,
    unique per call, and tells a later cleaner which writer it belongs to."""
    return path.with_name(f".{path.name}.{host_tag()}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def pid_alive(pid: int) -> bool:
    """Whether a process of this host still runs (a writer's temporary file is then not stale)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_orphaned(path: Path, *, now: float, stale_seconds: float) -> bool:
    """A temporary file whose writer is gone: written by a dead process of this host, or (any
    writer, any name) older than ``stale_seconds``."""
    try:
        age = now - path.stat().st_mtime
    except FileNotFoundError:
        return False
    match = _NAME.match(path.name)
    dead = match is not None and match.group("host") == host_tag() and not pid_alive(int(match.group("pid")))
    return dead or age > stale_seconds


def remove_orphaned(paths: Iterable[Path], *, stale_seconds: float) -> list[Path]:
    """Remove the orphaned temporary files among ``paths``; the ones removed (by this call)."""
    now, removed = time.time(), []
    for path in paths:
        if is_orphaned(path, now=now, stale_seconds=stale_seconds):
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed


def write_atomic(path: Path, data: bytes | str, *, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text or bytes) to ``path`` so a reader sees the old file or the new one, never
    half of one: under ``temporary_name(path)`` first, then ``os.replace``.  The folder is created;
    a failed write leaves no temporary file behind.  Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding=encoding)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
