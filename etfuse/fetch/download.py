"""The download engine shared by every plug-in: nothing half-written ever reaches ``landing/``.

A file is written to ``landing/<target>/.<name>.part`` (hidden and with a partial suffix: ingest
skips it twice over; a fixed name, unlike etfuse.tempfiles' per-writer names, so that a later run
finds it and can continue it) beside a marker ``.<name>.part.json`` naming the upstream version it holds.
When the bytes are complete the size and the provider's checksum are checked, the file is
fsynced and renamed to its final name (atomic on one filesystem), and only then is the ledger
row written.  A crash leaves the partial and its marker; the next run continues it when the
plug-in can resume and the upstream version is the same, and starts over otherwise.

Attempts: transient failures (a stall, a cut connection, a short file, a provider down) are
retried ``retries`` times with exponential backoff; the others stop at once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from etfuse.clock import utcnow_iso
from etfuse.fetch import Fetcher, FetchItem, Progress
from etfuse.fetch.errors import FetchError, TransferError
from etfuse.fetch.ledger import FetchLedger, LedgerRow
from etfuse.sources.common import file_digest, file_sha256

log = logging.getLogger(__name__)
T = TypeVar("T")


def partial_paths(folder: Path, name: str) -> tuple[Path, Path]:
    """The partial file and its marker for final name ``name``."""
    return folder / f".{name}.part", folder / f".{name}.part.json"


def call_with_timeout(fn: Callable[[], T], timeout_s: float, *, source: str, what: str) -> T:
    """Run ``fn`` in a helper thread and give up after ``timeout_s``: a server that stops sending
    must not hang a run.  (The abandoned call ends when its connection is closed.)"""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True, name=f"fetch-{source}")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TransferError(source, f"{what}: no answer within {timeout_s:g} s (the server stalled); "
                                    "raise fetch.<source>.timeout_s if the provider is just slow")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _checksum_ok(path: Path, checksum: str) -> tuple[bool, str]:
    algorithm, _, expected = checksum.partition(":")
    digest = file_digest(path, algorithm.lower())
    return digest.lower() == expected.lower(), digest


def verify(item: FetchItem, partial: Path) -> None:
    """Size and checksum against what the provider announced; a mismatch is a TransferError."""
    size = partial.stat().st_size
    if item.size is not None and size != item.size:
        if size > item.size:
            partial.unlink()
        raise TransferError(item.source, f"{item.name}: {size} bytes received, expected {item.size} "
                                         f"(a truncated or cut transfer); the partial file is kept to resume")
    if size == 0 and item.size is None:
        raise TransferError(item.source, f"{item.name}: empty download")
    if item.checksum:
        ok, found = _checksum_ok(partial, item.checksum)
        if not ok:
            partial.unlink()
            raise TransferError(item.source, f"{item.name}: checksum {item.checksum.split(':')[0]} mismatch, "
                                             f"expected {item.checksum.split(':', 1)[1]}, found {found}")


def _resume_offset(fetcher: Fetcher, item: FetchItem, partial: Path, marker: Path) -> int:
    """Bytes of a partial left by an earlier attempt that may be continued; 0 = start over."""
    if not partial.exists():
        return 0
    try:
        same = json.loads(marker.read_text()) == {"origin": item.origin, "version": item.version}
    except (OSError, ValueError):
        same = False
    if fetcher.resumable and same:
        size = partial.stat().st_size
        if item.size is None or size <= item.size:
            return size
    partial.unlink()
    return 0


def _promote(partial: Path, final: Path) -> None:
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fetch_item(fetcher: Fetcher, item: FetchItem, *, landing: Path, ledger: FetchLedger,
               progress: Progress | None = None, sleep: Callable[[float], None] = time.sleep) -> LedgerRow:
    """Bring ``item`` into ``landing/<target>/<name>`` and record it; see the module docstring."""
    cfg = fetcher.config
    folder = landing / item.target
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / item.name
    partial, marker = partial_paths(folder, item.name)
    report = progress or (lambda done, total: None)
    attempt = 0
    while True:
        try:
            offset = _resume_offset(fetcher, item, partial, marker)
            if offset:
                log.info("%s: resuming %s at byte %d", item.source, item.name, offset)
            marker.write_text(json.dumps({"origin": item.origin, "version": item.version}))
            report(offset, item.size)
            fetcher.download(item, partial, offset=offset, progress=lambda done, total=None: report(done, item.size))
            verify(item, partial)
            break
        except FetchError as exc:
            if not partial.exists():
                marker.unlink(missing_ok=True)          # nothing to resume: leave no trace
            if not exc.transient or attempt >= cfg.retries:
                raise
            pause = cfg.backoff_s * 2 ** attempt
            attempt += 1
            log.warning("%s (attempt %d of %d; next in %.1f s)", exc, attempt, cfg.retries + 1, pause)
            sleep(pause)
    sha = file_sha256(partial)
    size = partial.stat().st_size
    _promote(partial, final)
    marker.unlink(missing_ok=True)
    row = LedgerRow(source=item.source, origin=item.origin, version=item.version, name=item.name,
                    target=item.target, size=size, sha256=sha, checksum=item.checksum, fetched_at=utcnow_iso(),
                    provisional=item.provisional, days=item.days)
    ledger.record(row)
    return row
