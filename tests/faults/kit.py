"""Helpers of the fault catalogue (docs/reliability.md); the fixtures are in conftest.py.

Every fault test injects one fault into a running pipeline on the small synthetic world
(tests/conftest.py ``small_world``: 1 x 1 deg at 0.02 deg, 40 days) and asserts the outcome and
that nothing was lost: every file delivered to ``landing/`` is, byte for byte, in ``archive/`` or
``quarantine/`` (or still in ``landing/`` when the run was stopped before reaching it).

Tests report what they tried with ``record_property``: ``fault`` (catalogue ids), ``bad_inputs``
(how many faulty inputs were fed in) and ``files_lost`` (always 0, asserted).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from tests.conftest import REPO, SMALL_WORLD

#: The injected "today" of ingest runs: after the small world's last day (2021-07-19).
TODAY = date(2021, 8, 1)
#: The model's window in the fault tests (short: every product day costs window spatial passes once).
WINDOW = 3


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def settings_dict(home: Path, world: Path, **extra) -> dict:
    """The settings of a fault home as plain data (written to ``etfuse.yaml`` for subprocesses)."""
    w, s, e, n = SMALL_WORLD["bbox"]
    data = {
        "home": str(home),
        "window_days": WINDOW,
        "region": {"name": "small", "lon_min": w, "lon_max": e, "lat_min": s, "lat_max": n,
                   "resolution_deg": SMALL_WORLD["resolution_deg"], "margin_deg": SMALL_WORLD["margin_deg"]},
        "static": {"elevation_file": str(world / "static" / "elevation.nc")},
        "serving": {"quicklooks": False},
        "alerts": {"group_window_minutes": 0},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


@dataclass
class Home:
    """One ETFUSE_HOME for a fault test: its settings and a YAML config subprocesses can load."""

    root: Path
    config: Path
    world: Path

    @property
    def settings(self):
        from etfuse.settings import load_settings
        return load_settings(self.config)

    def env(self) -> dict[str, str]:
        """The environment of a subprocess working on this home (no ETFUSE_* leaking in)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ETFUSE_", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"))}
        env.update({"ETFUSE_CONFIG": str(self.config), "PYTHONPATH": str(REPO), "ORT_DISABLE_TELEMETRY": "1",
                    "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "PYTHONUNBUFFERED": "1"})
        return env


def make_home(root: Path, world: Path, **extra) -> Home:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "etfuse.yaml"
    config.write_text(json.dumps(settings_dict(root, world, **extra), indent=1))
    home = Home(root, config, world)
    home.settings.ensure_folders()
    return home


# ----------------------------------------------------------------------------- landing and what became of it
def deliver(settings, source: str, name: str, data: bytes | Path) -> Path:
    """Put one provider file into ``landing/<source>/``."""
    folder = settings.folder("landing") / source
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if isinstance(data, Path):
        shutil.copy2(data, target)
    else:
        target.write_bytes(data)
    return target


def deliver_world(settings, world: Path, sources=("era5land", "gleam", "modis", "cma", "stations"),
                  modis_days: int | None = None) -> list[Path]:
    out = []
    for source in sources:
        files = sorted((world / "landing" / source).glob("*"))
        if source == "modis" and modis_days is not None:
            files = files[:modis_days]
        out += [deliver(settings, source, f.name, f) for f in files]
    return out


def landing_snapshot(settings) -> dict[str, str]:
    """``source/name -> sha256`` of every file now in landing/."""
    root = settings.folder("landing")
    return {p.relative_to(root).as_posix(): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def kept_files(settings) -> dict[str, list[Path]]:
    """sha256 -> where the bytes are kept (archive/ and quarantine/, reason records excluded)."""
    kept: dict[str, list[Path]] = {}
    for folder in ("archive", "quarantine", "landing"):
        root = settings.folder(folder)
        for p in root.rglob("*") if root.exists() else []:
            if p.is_file() and not p.name.endswith(".reason.json") and not p.name.startswith("."):
                kept.setdefault(sha(p), []).append(p)
    return kept


def lost_files(settings, before: dict[str, str]) -> list[str]:
    """The delivered files whose bytes are nowhere under archive/, quarantine/ or landing/."""
    kept = kept_files(settings)
    return [name for name, digest in before.items() if digest not in kept]


def assert_nothing_lost(settings, before: dict[str, str], record_property=None) -> None:
    lost = lost_files(settings, before)
    if record_property is not None:
        record_property("files_lost", len(lost))
    assert not lost, f"files lost: {lost}"


def store_state(settings) -> dict:
    """The harmonised store's content: latest content hash per (source, day, variable) and per station row."""
    db = settings.harmonised / "ledger.sqlite"
    if not db.exists():
        return {}
    with sqlite3.connect(db) as con:
        grid = con.execute(
            "SELECT g.source, g.day, g.variable, g.sha256, g.stream FROM grid_versions g JOIN "
            "(SELECT source, day, variable, MAX(revision) AS r FROM grid_versions GROUP BY source, day, variable) m "
            "ON g.source=m.source AND g.day=m.day AND g.variable=m.variable AND g.revision=m.r").fetchall()
        rows = con.execute("SELECT source, station_id, day, sha256 FROM station_obs").fetchall()
    state = {("grid", s, d, v): (h, stream) for s, d, v, h, stream in grid}
    state.update({("obs", s, st, d): h for s, st, d, h in rows})
    return state


def stored_files_state(settings) -> dict[str, tuple]:
    """The stored day files themselves: path -> per-variable content hash attribute (the store's truth)."""
    import xarray as xr
    out = {}
    for p in sorted((settings.harmonised / "grids").glob("*/[0-9]*/*.nc")):
        with xr.open_dataset(p, engine="netcdf4") as ds:
            out[p.relative_to(settings.harmonised).as_posix()] = tuple(sorted(
                (str(v), ds[v].attrs.get("sha256"), ds[v].attrs.get("era5_stream")) for v in ds.data_vars))
    return out


def deliveries(settings) -> list[dict]:
    from etfuse.store import HarmonisedStore
    return HarmonisedStore(settings.harmonised).deliveries().to_dict("records")


def temp_leftovers(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob(".*.tmp")]

def copy_home(template: Path, dest: Path, world: Path, **extra) -> Home:
    """A private copy of a template home (its config rewritten to point at the copy)."""
    shutil.copytree(template, dest, symlinks=True)
    return make_home(dest, world, **extra)

def poisoned_model(model_file: Path, dest: Path, kind: str) -> Path:
    """A copy of the model whose serving output is NaN (``kind='nan'``) or negative (``'negative'``).

    The temporal graph's output ``et`` is renamed and passed through one more node, so the model
    otherwise runs exactly as the good one."""
    import onnx
    from onnx import helper, numpy_helper

    from training.export import SERVING_PARTS
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", *SERVING_PARTS.values()):
        shutil.copy2(model_file.parent / name, dest / name)
    path = dest / SERVING_PARTS["temporal"]
    model = onnx.load(str(path))
    graph = model.graph
    for node in graph.node:
        node.output[:] = ["et_raw" if o == "et" else o for o in node.output]
    value = np.array(np.nan if kind == "nan" else -5.0, dtype=np.float32)
    graph.initializer.append(numpy_helper.from_array(value, "poison"))
    graph.node.append(helper.make_node("Mul" if kind == "nan" else "Add", ["et_raw", "poison"], ["et"]))
    onnx.save(model, str(path))
    return dest / "model.onnx"


# ----------------------------------------------------------------------------- subprocesses
def python_cmd(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


def start(cmd: list[str], home: Home, log: Path, **env) -> subprocess.Popen:
    handle = open(log, "ab")
    return subprocess.Popen(cmd, cwd=home.root, env={**home.env(), **env}, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)


def run(cmd: list[str], home: Home, log: Path, timeout: float = 300, **env) -> int:
    proc = start(cmd, home, log, **env)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"{cmd} did not finish in {timeout} s; log:\n{log.read_text()[-3000:]}")


def kill_when(proc: subprocess.Popen, condition, *, timeout: float = 240, poll: float = 0.05) -> bool:
    """SIGKILL ``proc`` (its whole process group) as soon as ``condition()`` holds; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            hit = condition()
        except (OSError, sqlite3.Error):
            hit = False
        if hit:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return True
        time.sleep(poll)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    raise AssertionError("the condition to kill on never held")


def count_rows(db: Path, query: str) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
    try:
        return int(con.execute(query).fetchone()[0])
    finally:
        con.close()
