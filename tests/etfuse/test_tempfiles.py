"""Which temporary files a store may remove: only those whose writer is gone."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from etfuse.tempfiles import host_tag, is_orphaned, remove_orphaned, temporary_name, write_atomic

DEAD_PID = 999_999_999                       # above any pid_max: never a running process


def _named(folder: Path, *, host: str, pid: int, age_s: float = 0.0) -> Path:
    path = folder / f".era5land_2021-01-01.nc.{host}.{pid}.0badc0de.tmp"
    path.write_bytes(b"partial")
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


def test_temporary_name_is_hidden_unique_and_parseable(tmp_path):
    final = tmp_path / "etfuse_et_2021-01-01.nc"
    first, second = temporary_name(final), temporary_name(final)
    assert first != second and first.parent == tmp_path
    assert first.name.startswith(".etfuse_et_2021-01-01.nc.") and first.name.endswith(".tmp")
    assert f".{host_tag()}.{os.getpid()}." in first.name
    first.write_bytes(b"x")
    assert not is_orphaned(first, now=time.time(), stale_seconds=3600)     # we are alive


@pytest.mark.parametrize(("host", "pid", "age_s", "orphaned"), [
    ("self", "self", 0, False),               # a live writer of this host
    ("self", DEAD_PID, 0, True),              # a dead writer of this host: at once
    ("other-host", DEAD_PID, 0, False),       # another host's pid means nothing here: wait
    ("other-host", DEAD_PID, 7200, True),     # ... until it is older than any write can take
    ("self", "self", 7200, True),             # even a live pid: a write never takes that long (pid reused)
])
def test_orphaned_by_writer_and_age(tmp_path, host, pid, age_s, orphaned):
    path = _named(tmp_path, host=host_tag() if host == "self" else host,
                  pid=os.getpid() if pid == "self" else pid, age_s=age_s)
    assert is_orphaned(path, now=time.time(), stale_seconds=3600) is orphaned


def test_unparseable_names_go_only_by_age(tmp_path):
    young, old = tmp_path / ".a.nc.tmp", tmp_path / ".b.nc.tmp"
    for path in (young, old):
        path.write_bytes(b"x")
    os.utime(old, (time.time() - 7200,) * 2)
    assert remove_orphaned([young, old, tmp_path / ".gone.tmp"], stale_seconds=3600) == [old]
    assert young.exists() and not old.exists()


def test_harmonised_store_removes_a_dead_writers_day_file_when_opened(tmp_path):
    from etfuse.store import HarmonisedStore
    HarmonisedStore(tmp_path)
    folder = tmp_path / "grids" / "era5land" / "2021"
    folder.mkdir(parents=True)
    dead = _named(folder, host=host_tag(), pid=DEAD_PID)
    live = _named(folder, host=host_tag(), pid=os.getpid())
    assert HarmonisedStore(tmp_path).removed_temp_files == [dead]
    assert live.exists() and not dead.exists()


def test_write_atomic_replaces_whole_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "stats.json"
    assert write_atomic(target, "first") == target                # the folder is created
    write_atomic(target, b"\x00second")
    assert target.read_bytes() == b"\x00second"
    assert [p.name for p in target.parent.iterdir()] == ["stats.json"]

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("etfuse.tempfiles.os.replace", full_disk)
    with pytest.raises(OSError):
        write_atomic(target, "third")
    assert target.read_bytes() == b"\x00second"                      # the old file is intact
    assert [p.name for p in target.parent.iterdir()] == ["stats.json"]  # and no temporary file is left
