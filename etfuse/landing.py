"""Files of the landing zone: a landing file, a safe file name, and the durable move that takes a
file to the archive, to quarantine or back to landing (a crash never leaves a partial file under
a final name)."""

from __future__ import annotations

import errno
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from etfuse.tempfiles import temporary_name

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A provider's file name made safe as a single path component (no separators, no '..')."""
    base = _UNSAFE.sub("_", Path(str(name).replace("\\", "/")).name).lstrip(".")
    return (base or "unnamed")[:200]


@dataclass(frozen=True)
class LandingFile:
    source: str
    path: Path



def move_file(src: Path, dest: Path) -> Path:
    """Move ``src`` to ``dest``: a rename on one filesystem; across filesystems a copy to a temporary
    name in dest's folder, fsync, rename, and only then the source is removed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dest)
        return dest
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = temporary_name(dest)
    try:
        shutil.copy2(src, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    os.unlink(src)
    return dest
