"""Real services for tests: free loopback ports, waiting for HTTP health, an MLflow server, and
running PostgreSQL binaries (which refuse root) as the postgres user, and one-call HTTP with basic auth."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

PG_BIN = Path(os.environ.get("ETFUSE_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path | None, lines: int = 60) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Until ``url`` answers 200; fails at once (with the log's tail) when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode} before {url} answered:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s:\n{tail(log)}")


@contextlib.contextmanager
def served_app(app, *, join_s: float = 15) -> Iterator[str]:
    """An ASGI app served by uvicorn in a thread on a free loopback port; yields its base URL once
    /health answers, and stops the server on exit."""
    import threading

    import uvicorn
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", timeout=30)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=join_s)


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace_s: float = 30) -> None:
    """Signal a process started with ``start_new_session=True`` and its children; kill after ``grace_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def postgres_missing() -> str | None:
    """Why a real PostgreSQL cannot be started here (the reason a test skips with), or None."""
    import shutil
    if not (PG_BIN / "initdb").is_file():
        return f"PostgreSQL 15 binaries not found in {PG_BIN} (set ETFUSE_PG_BIN to their folder)"
    if os.geteuid() == 0:
        import pwd
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root needs a `postgres` user to start PostgreSQL"
        if shutil.which("runuser") is None:
            return "running as root needs `runuser` to start PostgreSQL"
    return None


@contextlib.contextmanager
def postgres_cluster(database: str) -> Iterator[str]:
    """A throw-away PostgreSQL 15 cluster (trust auth, fsync off) on a free loopback port in a
    temporary folder, with the empty database ``database``; yields its ``postgresql://`` URL.
    Callers skip first with ``postgres_missing()``."""
    import shutil
    import tempfile
    root = Path(tempfile.mkdtemp(prefix="etfuse-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, logfile, port = root / "data", root / "postgres.log", free_port()
    started = False
    try:
        subprocess.run(as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                    "-E", "UTF8", "--no-sync"]), check=True, capture_output=True, timeout=120)
        subprocess.run(as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-w", "-t", "60",
                                    "-o", f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off", "start"]),
                       check=True, capture_output=True, timeout=120)
        started = True
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{database}"')
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
    finally:
        if started:
            subprocess.run(as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                           capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(folder: Path, backend_store_uri: str | None = None, *, extra_args: tuple[str, ...] = (),
                  extra_env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``mlflow server --workers 1`` on a free loopback port with proxied artifacts under ``folder``
    (SQLite there unless ``backend_store_uri``); yields (url, process).  ``extra_args`` and
    ``extra_env`` e.g. for ``--app-name basic-auth`` and its ``MLFLOW_AUTH_*`` variables."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe) if exe.exists() else "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", backend_store_uri or f"sqlite:///{folder / 'mlflow.db'}",
           "--serve-artifacts", "--artifacts-destination", str(folder / "artifacts"),
           "--default-artifact-root", "mlflow-artifacts:/", *extra_args]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", **(extra_env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = folder / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder,
                                start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(url + "/health", 120, proc, log_path)
            yield url, proc
        finally:
            # a graceful stop waits for idle keep-alive connections: do not wait long
            stop_group(proc, grace_s=5)


def http(method: str, url: str, *, auth: tuple[str, str] | None = None, body: dict | None = None,
         timeout: float = 10) -> tuple[int, object]:
    """One request; returns (status, decoded JSON or text).  HTTP errors are returned, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_deployment_runs(prefect_api: str, auth: tuple[str, str], deployment: str, *, timeout: float,
                         at_least: int = 1) -> list[dict]:
    """Wait until the Prefect server holds ``at_least`` runs of ``deployment`` (``flow/deployment``
    named the same, e.g. ``history``) and every one of them has ended; returns them.

    For flows that a flow starts in the background (the history recompute after a daily run)."""
    deadline = time.monotonic() + timeout
    body = {"deployments": {"name": {"any_": [deployment]}}}
    runs: list[dict] = []
    while time.monotonic() < deadline:
        status, runs = http("POST", f"{prefect_api}/flow_runs/filter", auth=auth, body=body)
        assert status == 200, runs
        if len(runs) >= at_least and all(r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
                                         for r in runs):
            return runs
        time.sleep(3)
    raise TimeoutError(f"runs of deployment {deployment!r} did not end within {timeout} s: "
                       f"{[(r['name'], r['state']['type']) for r in runs]}")
