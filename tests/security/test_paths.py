"""Path traversal: a provider's file name is never used as a path before ``etfuse.ingest.safe_name``
has made it a single safe component, every file ingest keeps stays inside ETFUSE_HOME, and
``etfuse quarantine release`` acts on the quarantine folder only (docs/reliability.md, "Security").
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from etfuse.ingest import QuarantineError, ingest_all, quarantined, release, safe_name
from tests.faults.kit import TODAY, Home, assert_nothing_lost, deliver, landing_snapshot, make_home, sha

HOSTILE = [
    "../../etc/passwd", "..", ".", "", "/", "a/b\\c", "\x00", "a\x00b.nc", "x" * 5000, "é" * 300,
    "蒸散发_2021.nc", "..evil.nc", ".hidden", "...", "a/..", "foo/", "/etc/passwd", "..\\..\\windows\\win.ini",
    "C:\\Windows\\system32\\cfg.nc", "\\\\server\\share\\x.nc", "a b\nc.nc", "$(rm -rf ~).nc", "`id`.nc",
    "*.nc", "[ab]?.nc", "-rf", "~root", "%2e%2e%2fetc%2fpasswd", "\u202eevil.cn", "name;rm -rf .;.nc",
    "E.nc.reason.json", "\t\r\n", " ", "CON", "a" * 254 + ".nc",
]


def assert_single_safe_component(result: str) -> None:
    assert isinstance(result, str) and result
    assert re.fullmatch(r"[A-Za-z0-9._-]+", result), result
    assert not result.startswith("."), result                    # not '.', '..' nor a hidden file
    assert len(result.encode()) <= 200, len(result)              # far below NAME_MAX (255 bytes)
    assert Path(result).name == result and len(Path(result).parts) == 1
    base = Path("/srv/etfuse/quarantine/gleam")
    assert (base / result).parent == base and os.path.normpath(base / result) == str(base / result)


@pytest.mark.parametrize("name", HOSTILE, ids=lambda n: repr(n[:24]))
def test_safe_name_makes_one_safe_component(name):
    result = safe_name(name)
    assert_single_safe_component(result)
    assert safe_name(result) == result                           # idempotent


def test_safe_name_keeps_ordinary_provider_names():
    for name in ("E_2021_GLEAM_v3.7a.nc", "MOD11A1.A2021161.h25v05.061.2021162093012.hdf",
                 "SURF_CLI_CHN_MUL_DAY-EVP-13240-202106.TXT", "FLX_CN-HaM_FLUXNET2015_FULLSET_DD_2002-2004_1-4.csv",
                 "era5land_202106.nc", "station_et_2021-06-10_2021-07-19.csv"):
        assert safe_name(name) == name
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("..") == safe_name(".") == safe_name("") == "unnamed"
    assert safe_name("a/b\\c") == "c"


# ----------------------------------------------------------------------------- end to end
@pytest.fixture
def home(tmp_path, small_world, monkeypatch) -> Home:
    """A fresh home over the small world (tests/faults/kit.py), nothing of ETFUSE_* leaking in, and an
    empty working directory, so that a relative path written by mistake shows up."""
    for key in [k for k in os.environ if k.startswith("ETFUSE_") and k != "ETFUSE_REALDATA"]:
        monkeypatch.delenv(key)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return make_home(tmp_path / "home", small_world)


def tree(root: Path, skip: Path | None = None) -> dict[str, str]:
    """relative path -> sha256 (or 'dir' / 'link') of everything under ``root`` except ``skip``."""
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        rel = p.relative_to(root).as_posix()
        out[rel] = "link" if p.is_symlink() else "dir" if p.is_dir() else sha(p)
    return out


def inside(path: str | Path, folder: Path) -> bool:
    """``path`` (its folder resolved, the last component as it is: a symlink is not followed) lies in ``folder``."""
    path = Path(path)
    return Path(os.path.realpath(path.parent), path.name).is_relative_to(folder.resolve())


#: hostile but legal provider file names (bytes that are not a valid file of any source: quarantined)
HOSTILE_FILES = ["$(rm -rf ~).nc", "`touch pwned`.nc", "a b\nc.nc", "-rf.nc", "蒸散发.nc", "x" * 240 + ".nc",
                 "%2e%2e%2F%2e%2e%2Fescape.nc", "name;rm -rf .;.nc", "E_2021_GLEAM_v3.7a.nc\r", "\u202egpj.nc"]


def test_hostile_file_names_stay_inside_the_home(home, small_world, tmp_path, record_property):
    settings = home.settings
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.nc").write_bytes(b"a file outside ETFUSE_HOME that no ingest may move or change")
    for k, name in enumerate(HOSTILE_FILES):
        deliver(settings, "gleam", name, f"not a GLEAM file {k}\n".encode())
    stations = next((small_world / "landing" / "stations").glob("*.csv"))
    deliver(settings, "stations", "$(reboot) station;et 'x'.csv", stations)        # valid: accepted, archived
    hidden = deliver(settings, "gleam", "..evil.nc", b"a dot file: ingest leaves it alone")
    link = settings.folder("landing") / "gleam" / "link_to_outside.nc"
    link.symlink_to(outside / "target.nc")
    before = landing_snapshot(settings)
    around = tree(tmp_path, skip=home.root)

    report = ingest_all(settings, today=TODAY)

    outcomes = {o.file: o for o in report.outcomes}
    assert set(outcomes) == set(HOSTILE_FILES) | {"$(reboot) station;et 'x'.csv", "link_to_outside.nc"}
    for name, o in outcomes.items():
        folder = settings.folder("archive" if o.status == "accepted" else "quarantine")
        assert o.status in ("accepted", "quarantined"), (name, o.status)
        assert inside(o.kept_as, folder), (name, o.kept_as)
        assert_single_safe_component(Path(o.kept_as).name)
        # archive/<source>/<first day>/<sha12>-<name>, quarantine/<source>/<name>
        expected_parent = folder / o.source / o.days[0] if o.status == "accepted" else folder / o.source
        assert Path(o.kept_as).parent == expected_parent, o.kept_as
        assert os.path.lexists(o.kept_as)
    assert outcomes["$(reboot) station;et 'x'.csv"].status == "accepted"
    assert {q["file"] for q in quarantined(settings)} == {safe_name(n) for n in HOSTILE_FILES} | {"link_to_outside.nc"}
    # everything ingest wrote is under the home; nothing around it changed, the working directory stays empty
    for p in home.root.rglob("*"):
        assert inside(p, home.root), p
    assert tree(tmp_path, skip=home.root) == around
    assert list(Path.cwd().iterdir()) == []
    # the symlink was moved as a link: its target is where it was, unchanged
    assert (outside / "target.nc").read_bytes().startswith(b"a file outside")
    assert Path(outcomes["link_to_outside.nc"].kept_as).is_symlink()
    # a dot file is left in landing untouched (hidden files are in-progress uploads); everything else is kept
    assert hidden.read_bytes() == b"a dot file: ingest leaves it alone"
    assert_nothing_lost(settings, {k: v for k, v in before.items() if k != "gleam/..evil.nc"}, record_property)
    record_property("bad_inputs", len(HOSTILE_FILES) + 3)


def test_release_acts_on_the_quarantine_folder_only(home, tmp_path):
    settings = home.settings
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.nc"
    victim.write_bytes(b"outside")
    deliver(settings, "gleam", "$(rm -rf ~).nc", b"garbage 1")
    deliver(settings, "gleam", "bad.nc", b"garbage 2")
    assert ingest_all(settings, today=TODAY).counts() == {"quarantined": 2}
    q = settings.folder("quarantine")
    before = tree(q)
    for name in (str(victim), "../../outside/victim.nc", "/etc/passwd", "..", ".", "", "*", "*/*", "gleam/*",
                 "../quarantine/gleam/bad.nc.reason.json", "bad.nc.reason.json", str(outside)):
        with pytest.raises(QuarantineError):
            release(settings, name)
    assert tree(q) == before and victim.read_bytes() == b"outside"
    # the name as `quarantine list` shows it (sanitised) releases the file into landing/<source>/, inside the home
    shown = [r["file"] for r in quarantined(settings)]
    assert sorted(shown) == ["_rm_-rf_.nc", "bad.nc"]
    lf = release(settings, "_rm_-rf_.nc")
    assert lf.path == settings.folder("landing") / "gleam" / "_rm_-rf_.nc" and lf.path.read_bytes() == b"garbage 1"
    assert inside(lf.path, home.root)
    assert not (q / "gleam" / "_rm_-rf_.nc").exists()


def test_the_cli_refuses_to_release_a_path_outside_the_quarantine(home, tmp_path):
    outside = tmp_path / "outside.nc"
    outside.write_bytes(b"outside")
    env = {**home.env(), "ETFUSE_CONFIG": str(home.config)}
    done = subprocess.run([sys.executable, "-m", "flows.cli", "quarantine", "release", str(outside)],
                          cwd=home.root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr[-2000:])
    assert "is not in the quarantine folder" in done.stderr and "Traceback" not in done.stderr
    assert outside.read_bytes() == b"outside"
    assert not any(p.is_file() for p in home.settings.folder("landing").rglob("*"))


# ----------------------------------------------------------------------------- known bugs (docs/reliability.md)
def test_release_refuses_a_path_outside_the_quarantine_folder(home, tmp_path):
    settings = home.settings
    deliver(settings, "gleam", "bad.nc", b"garbage")
    ingest_all(settings, today=TODAY)
    elsewhere = tmp_path / "elsewhere" / "bad.nc"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"not the quarantined file")
    try:
        with pytest.raises(QuarantineError):
            release(settings, str(elsewhere))
    finally:
        assert elsewhere.read_bytes() == b"not the quarantined file"      # never touched either way


def test_release_source_slash_name_picks_one_of_two(home):
    settings = home.settings
    deliver(settings, "gleam", "same.nc", b"garbage for gleam")
    deliver(settings, "era5land", "same.nc", b"garbage for era5land")
    assert ingest_all(settings, today=TODAY).counts() == {"quarantined": 2}
    with pytest.raises(QuarantineError, match="SOURCE/NAME"):
        release(settings, "same.nc")
    lf = release(settings, "gleam/same.nc")
    assert lf.source == "gleam" and lf.path.read_bytes() == b"garbage for gleam"


def test_a_provider_file_named_like_a_reason_record_is_not_lost(home):
    settings = home.settings
    deliver(settings, "gleam", "E.nc.reason.json", b"first provider file")
    before = landing_snapshot(settings)
    ingest_all(settings, today=TODAY)
    deliver(settings, "gleam", "E.nc", b"second provider file")
    before.update(landing_snapshot(settings))
    ingest_all(settings, today=TODAY)
    deliver(settings, "gleam", "E.nc.reason.json", b"third provider file, same name as the first")
    before.update(landing_snapshot(settings))
    ingest_all(settings, today=TODAY)
    kept = {sha(p) for p in settings.folder("quarantine").rglob("*") if p.is_file()}
    assert set(before.values()) <= kept, "a quarantined provider file was overwritten"
    # each is listed as quarantined data (none taken for a reason record), so each can be released
    listed = {q["path"] for q in quarantined(settings)}
    assert len(listed) == 3 and not any(p.endswith(".reason.json") for p in listed)
