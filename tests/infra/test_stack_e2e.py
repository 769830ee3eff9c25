"""The compose stack for real: its images built here (no registry), its containers run end to end.

What tests/infra/test_native_stack.py imitates with native processes, this runs as docker-compose
runs it, on the CPU profile:

1. a Docker engine (started here as `dockerd --iptables=false --bridge=none` when none runs, and
   stopped again at the end) and the images of `make images` (infra/docker/build-images.sh: local
   debootstrap bases, the host's CA bundle and the torch CPU wheel as build-time inputs only);
2. `docker-compose up` with a throw-away .env (random secrets, loopback ports), until every service
   is healthy and the one-shot services (s3-init, prefect-register) exited 0;
3. a small synthetic world put into the landing folder of the `etfuse-home` volume; the deployments
   `daily` (ingest), `retrain` (registers and promotes v1) and `daily` (the product) run through the
   Prefect worker container;
4. the model version in MLflow, its artifacts in the S3 store, the product days in the volume, and the
   API container's `/days` and `/timeseries`;
5. `docker-compose down` and `up` again: all of it is still there;
6. the worker container killed during a daily run and started again: the next daily run completes and
   nothing is lost;
7. the watcher service started: a new day's ERA5-Land and MODIS files landing in the volume start
   exactly one `daily` run (tag `etfuse-arrival`), which ingests them and writes the day, seen by the API.

Slow (a cold image build takes about 20 min on this 2-core machine, a warm one seconds; the stack
run about 8 min).  Skipped with the reason where there is no Docker client, no docker-compose, or no
engine and no way to start one (not root, no dockerd).  Only loopback ports are published; the
compose project, its containers, network and volumes are removed at the end; the images stay (the
layer cache of the next run).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.services import free_port, http, stop_group, tail, wait_deployment_runs

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PROJECT = "etfuse-e2e"
BBOX = (101.0, 36.0, 102.0, 37.0)          # lon_min, lat_min, lon_max, lat_max of the synthetic world
CPU_IMAGES = {"cpu": "etfuse-cpu:0.1.0", "postgres": "etfuse-postgres:15", "seaweedfs": "etfuse-seaweedfs:4.48"}
MODEL_NAME = "etfuse-gcn-gru"
HEALTH_TIMEOUT_S = 600


def run(args: list[str], *, timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-4000:]}")
    return result


def engine_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def docker_engine(tmp_path_factory) -> Iterator[None]:
    """A running Docker engine: the one that runs, else one started here (and stopped at the end)."""
    for tool in ("docker", "docker-compose"):
        if shutil.which(tool) is None:
            pytest.skip(f"no `{tool}` (Debian: apt-get install docker.io docker-compose)")
    if engine_answers():
        yield
        return
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        pytest.skip("no Docker engine runs, and none can be started here (needs root and dockerd)")
    log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with log.open("w") as out:
        # no iptables rules and no default bridge: the host's network stays as it is; the compose
        # network (a user-defined bridge) and the loopback port proxies still work
        dockerd = subprocess.Popen(["dockerd", "--iptables=false", "--bridge=none"], stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not engine_answers():
            assert dockerd.poll() is None, f"dockerd exited {dockerd.returncode}:\n{tail(log)}"
            assert time.monotonic() < deadline, f"dockerd did not answer within 60 s:\n{tail(log)}"
            time.sleep(1)
        yield
    finally:
        stop_group(dockerd, grace_s=60)


@pytest.fixture(scope="module")
def images(docker_engine) -> dict[str, float]:
    """The CPU profile's images, built by `make images`'s script (layer cache: seconds when warm)."""
    started = time.monotonic()
    result = run(["sh", str(REPO / "infra" / "docker" / "build-images.sh"), *CPU_IMAGES], timeout=3600, cwd=REPO)
    print(result.stdout)
    sizes = {name: int(run(["docker", "image", "inspect", "--format", "{{.Size}}", tag]).stdout) / 1e6
             for name, tag in CPU_IMAGES.items()}
    print(f"images built in {time.monotonic() - started:.0f} s; sizes [MB]: {sizes}")
    return sizes


#: the watcher (etfuse watch) would start `daily` runs of its own when the world lands in landing/;
#: the test starts and counts the runs of steps 3-6 itself, so the watcher is started only for step 7
#: (tests/flows/test_watch.py tests its debounce; tests/infra/test_compose.py its service definition)
NO_WATCHER = ("--scale", "watcher=0")
#: the day that lands while the watcher runs (the world ends the day before)
ARRIVAL_DAY = "2021-08-01"
ENDED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")

class Stack:
    """docker-compose on the repository's compose file, with a test .env and a settings override."""

    def __init__(self, root: Path, variables: dict[str, str]) -> None:
        self.root, self.variables = root, variables
        self.env = {**os.environ, "COMPOSE_PROFILES": "cpu", "COMPOSE_PROJECT_NAME": PROJECT}

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return run(["docker-compose", "--project-name", PROJECT, "--env-file", str(self.root / ".env"),
                    "--file", str(REPO / "docker-compose.yml"), "--file", str(self.root / "override.yml"),
                    "--profile", "cpu", *args], timeout=timeout, check=check, env=self.env, cwd=REPO)

    def container(self, service: str) -> str:
        ids = self.compose("ps", "--quiet", service).stdout.split()
        assert len(ids) == 1, (service, ids)
        return ids[0]

    def exec(self, service: str, *command: str, stdin: bytes | None = None, timeout: float = 300) -> str:
        args = ["docker", "exec", *(["-i"] if stdin is not None else []), self.container(service), *command]
        result = subprocess.run(args, input=stdin, capture_output=True, timeout=timeout)
        assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-4000:])
        return result.stdout.decode()

    def logs(self, *services: str) -> str:
        return self.compose("logs", "--no-color", "--tail", "80", *services, check=False).stdout

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> float:
        """Seconds until every long-running service is healthy and every one-shot exited 0."""
        started = time.monotonic()
        one_shots = {"s3-init", "prefect-register"}
        running = {"postgres", "seaweedfs", "mlflow", "prefect-server", "prefect-worker", "serving-cpu"}
        states: dict[str, str] = {}
        while time.monotonic() - started < timeout:
            states = {}
            for service in one_shots | running:
                ids = self.compose("ps", "--all", "--quiet", service, check=False).stdout.split() or \
                      self.compose("ps", "--quiet", service, check=False).stdout.split()
                if not ids:
                    states[service] = "missing"
                    continue
                state = json.loads(run(["docker", "inspect", "--format", "{{json .State}}", ids[0]]).stdout)
                if service in one_shots:
                    states[service] = "done" if state["Status"] == "exited" and state["ExitCode"] == 0 else \
                        f"{state['Status']}/{state['ExitCode']}"
                    if state["Status"] == "exited" and state["ExitCode"] != 0:
                        raise AssertionError(f"{service} exited {state['ExitCode']}:\n{self.logs(service)}")
                else:
                    states[service] = state.get("Health", {}).get("Status", state["Status"])
            if all(states[s] == "done" for s in one_shots) and all(states[s] == "healthy" for s in running):
                return time.monotonic() - started
            time.sleep(3)
        raise AssertionError(f"not healthy within {timeout} s: {states}\n{self.logs()}")


def settings_for_the_containers(world_static: str) -> dict:
    """infra/etfuse/etfuse.yaml with the synthetic world's region, a short training and no ingest delay."""
    settings = yaml.safe_load((REPO / "infra" / "etfuse" / "etfuse.yaml").read_text())
    settings.update(
        region={"name": "stack-test", "lon_min": BBOX[0], "lat_min": BBOX[1], "lon_max": BBOX[2],
                "lat_max": BBOX[3], "resolution_deg": 0.02},
        static={"elevation_file": world_static}, training={"epochs": 2}, ingest={"min_age_seconds": 0},
        serving={**settings.get("serving", {}), "quicklooks": False})
    return settings


def check_no_build_time_inputs() -> None:
    """The CA bundle and the wheels of infra/docker/build-context stay in the build stages."""
    host_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    for name, tag in CPU_IMAGES.items():
        history = run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", tag]).stdout
        assert "build-context" not in history, (name, history)
        listing = run(["docker", "run", "--rm", "--entrypoint", "/bin/sh", tag, "-c",
                       "ls -d /tmp/build-context 2>/dev/null; find / -xdev -name 'torch-*.whl' 2>/dev/null; true"])
        assert listing.stdout.strip() == "", (name, listing.stdout)
    if host_bundle.exists():
        # the host's bundle (with its proxy's CA) is nowhere in the image: Debian's own bundle only
        host_certs = set(host_bundle.read_text().split("-----END CERTIFICATE-----"))
        image_bundle = run(["docker", "run", "--rm", "--entrypoint", "cat", CPU_IMAGES["cpu"],
                            "/etc/ssl/certs/ca-certificates.crt"], check=False).stdout
        image_certs = set(image_bundle.split("-----END CERTIFICATE-----"))
        extra_on_host = host_certs - image_certs
        if extra_on_host:
            assert not extra_on_host & image_certs


# One test on purpose: under pytest-xdist, two tests of this module could land on two workers and
# build the images, or start an engine, twice at the same time.
def test_compose_stack_end_to_end(images, tmp_path):
    check_no_build_time_inputs()
    started = time.monotonic()
    timings: dict[str, float] = {}
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        timings[name] = round(time.monotonic() - mark, 1)
        mark = time.monotonic()

    root = Path(tempfile.mkdtemp(prefix="etfuse-e2e-"))
    os.chmod(root, 0o755)
    token = lambda: secrets.token_hex(12)   # noqa: E731 - letters and digits: valid everywhere
    variables = {
        "COMPOSE_PROJECT_NAME": PROJECT, "COMPOSE_PROFILES": "cpu",
        "POSTGRES_PASSWORD": token(), "MLFLOW_DB_PASSWORD": token(), "PREFECT_DB_PASSWORD": token(),
        "S3_ACCESS_KEY": token(), "S3_SECRET_KEY": token(), "S3_BUCKET": "etfuse-mlflow-e2e",
        "MLFLOW_ADMIN_USER": "admin", "MLFLOW_ADMIN_PASSWORD": token(), "MLFLOW_FLASK_SECRET_KEY": token(),
        "PREFECT_AUTH_USER": "admin", "PREFECT_AUTH_PASSWORD": token(), "ETFUSE_BIND_ADDRESS": "127.0.0.1",
        "MLFLOW_PORT": str(free_port()), "PREFECT_PORT": str(free_port()), "SERVING_PORT": str(free_port()),
        "ETFUSE_IMAGE_CPU": CPU_IMAGES["cpu"], "ETFUSE_IMAGE_POSTGRES": CPU_IMAGES["postgres"],
        "ETFUSE_IMAGE_SEAWEEDFS": CPU_IMAGES["seaweedfs"],
    }
    # every other secret .env.example asks for (compose refuses to start without each, even for a
    # profile not started, e.g. GRAFANA_ADMIN_PASSWORD of `monitoring`): a random value too
    for line in (REPO / ".env.example").read_text().splitlines():
        key, _, value = line.strip().partition("=")
        if value == "change-me" and not key.startswith("#"):
            variables.setdefault(key, token())
    (root / ".env").write_text("".join(f"{k}={v}\n" for k, v in variables.items()))
    config = root / "etfuse.yaml"
    config.write_text(yaml.safe_dump(settings_for_the_containers("/data/etfuse/static/elevation.nc")))
    config.chmod(0o644)
    mounts = ["etfuse-home:/data/etfuse", f"{config}:/etc/etfuse/etfuse.yaml:ro"]
    (root / "override.yml").write_text(yaml.safe_dump({"services": {
        "prefect-register": {"volumes": mounts[1:]},
        "prefect-worker": {"volumes": mounts, "environment": {"PREFECT_WORKER_QUERY_SECONDS": "2"}},
        "serving-cpu": {"volumes": mounts},
        "watcher": {"volumes": mounts},
    }}))
    stack = Stack(root, variables)
    mlflow_url = f"http://127.0.0.1:{variables['MLFLOW_PORT']}"
    prefect_api = f"http://127.0.0.1:{variables['PREFECT_PORT']}/api"
    serving_url = f"http://127.0.0.1:{variables['SERVING_PORT']}"
    mlflow_auth = (variables["MLFLOW_ADMIN_USER"], variables["MLFLOW_ADMIN_PASSWORD"])
    prefect_auth = (variables["PREFECT_AUTH_USER"], variables["PREFECT_AUTH_PASSWORD"])

    # the synthetic world (2 months) is made on the host while the stack starts
    world = root / "world"
    synth = subprocess.Popen([str(Path(sys.executable).parent / "etfuse"), "synth", "--out", str(world),
                              "--bbox", ",".join(map(str, BBOX)), "--start", "2021-06-01", "--end", "2021-07-31",
                              "--resolution", "0.02"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=root)
    stack.compose("down", "--volumes", "--remove-orphans", check=False)      # leftovers of a killed run
    try:
        # ---- up, until healthy
        # docker-compose 1.29's `up` itself waits for the health conditions of depends_on: time both
        up_started = time.monotonic()
        stack.compose("up", "--detach", "--no-build", *NO_WATCHER, timeout=900)
        stack.wait_healthy()
        up_to_healthy = time.monotonic() - up_started
        phase("up -> healthy")
        assert http("GET", f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1")[0] == 401
        assert http("POST", f"{prefect_api}/flow_runs/filter", body={})[0] == 401
        assert http("GET", f"{serving_url}/health")[0] == 200
        # the explorer bundle built by the image's own stage (npm at build time, nothing at run time)
        status, page = http("GET", f"{serving_url}/")
        assert status == 200 and "vendor/leaflet.js" in page, (status, str(page)[:300])
        status, script = http("GET", f"{serving_url}/static/vendor/leaflet.js")
        assert status == 200 and "Leaflet" in script[:2000]

        # ---- the world into the landing folder of the volume (as the worker's user, through tar)
        output, _ = synth.communicate(timeout=600)
        assert synth.returncode == 0, output
        archive = root / "world.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(world / "landing", arcname="landing")
            tar.add(world / "static", arcname="static")
        stack.exec("prefect-worker", "tar", "-x", "-C", "/data/etfuse", stdin=archive.read_bytes())
        landed = stack.exec("prefect-worker", "find", "/data/etfuse/landing", "-type", "f").split()
        assert landed, "nothing in landing/"
        phase("world into the volume")

        def create_run(name: str) -> str:
            status, deployment = http("GET", f"{prefect_api}/deployments/name/{name}/{name}", auth=prefect_auth)
            assert status == 200, deployment
            status, flow_run = http("POST", f"{prefect_api}/deployments/{deployment['id']}/create_flow_run",
                                    auth=prefect_auth, body={})
            assert status == 201, flow_run
            return flow_run["id"]

        def state_of(run_id: str) -> dict:
            status, flow_run = http("GET", f"{prefect_api}/flow_runs/{run_id}", auth=prefect_auth)
            assert status == 200, flow_run
            return flow_run["state"]

        def wait_run(run_id: str, name: str, timeout: float) -> dict:
            deadline = time.monotonic() + timeout
            state = state_of(run_id)
            while state["type"] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") and time.monotonic() < deadline:
                time.sleep(2)
                state = state_of(run_id)
            assert state["type"] == "COMPLETED", f"{name}: {state}\n--- worker\n{stack.logs('prefect-worker')}"
            return state

        def alias_status() -> int:
            return http("GET", f"{mlflow_url}/api/2.0/mlflow/registered-models/alias?name={MODEL_NAME}"
                               "&alias=champion", auth=mlflow_auth)[0]

        runs = {}
        for name, timeout in (("daily", 600), ("retrain", 900), ("daily", 600)):
            run_id = create_run(name)
            wait_run(run_id, name, timeout)
            runs.setdefault(name, []).append(run_id)
            phase(f"{name} run")
            if name == "retrain" and alias_status() != 200:
                # the gate may refuse v1 (it must beat the strongest baseline beyond the interval,
                # docs/registry.md); this test is about the stack, so an operator promotes it by hand,
                # through the CLI in the worker container, as the demo does
                stack.exec("prefect-worker", "etfuse", "models", "promote", "1", "--by", "e2e-test",
                           "--reason", "e2e: the stack is under test, not the model's skill")

        # ---- what the runs left: MLflow version, S3 artifacts, product days, the API
        def champion() -> dict:
            status, found = http("GET", f"{mlflow_url}/api/2.0/mlflow/registered-models/alias?name={MODEL_NAME}"
                                        "&alias=champion", auth=mlflow_auth)
            assert status == 200, found
            return found["model_version"]

        def s3_keys() -> list[str]:
            script = ("import boto3, json, os; s3 = boto3.client('s3', endpoint_url=os.environ['MLFLOW_S3_ENDPOINT_URL']);"
                      f"pages = s3.get_paginator('list_objects_v2').paginate(Bucket='{variables['S3_BUCKET']}');"
                      "print(json.dumps([o['Key'] for p in pages for o in p.get('Contents', [])]))")
            return json.loads(stack.exec("mlflow", "python", "-c", script))

        def product_files() -> list[str]:
            return sorted(stack.exec("prefect-worker", "find", "/data/etfuse/product", "-name", "*.nc").split())

        def api_days() -> list[dict]:
            status, days = http("GET", f"{serving_url}/days", timeout=60)
            assert status == 200, days
            return days

        version = champion()
        assert version["version"] == "1" and version["status"] == "READY", version
        model_id = version["source"].removeprefix("models:/")
        keys = s3_keys()
        model_keys = [k for k in keys if f"/models/{model_id}/" in k]
        assert any(k.endswith(".onnx") for k in model_keys), keys
        assert any(k.endswith("config/settings.yaml") for k in keys), keys
        # today first: the daily run writes the newest update.recent_days (14) days itself and hands the
        # older ones to a run of the `history` deployment, which the worker runs in the background
        history = wait_deployment_runs(prefect_api, prefect_auth, "history", timeout=900)
        assert all(r["state"]["type"] == "COMPLETED" for r in history), (history, stack.logs("prefect-worker"))
        files = product_files()
        assert len(files) >= 30, files
        days = api_days()
        assert len(days) >= 30 and {d["model_version"] for d in days} == {1}, days
        last = days[-1]["date"]
        status, series = http("GET", f"{serving_url}/timeseries?lat=36.5&lon=101.5&start={days[0]['date']}&end={last}",
                              timeout=60)
        assert status == 200, series
        values = [p["et_mm"] for p in series["values"]]
        assert len(values) == len(days) and all(v is not None and 0 <= v < 20 for v in values), series
        phase("checks")

        # ---- down, up: everything is still there
        stack.compose("down", timeout=300)
        assert stack.compose("ps", "--quiet").stdout.strip() == ""
        up_started = time.monotonic()
        stack.compose("up", "--detach", "--no-build", *NO_WATCHER, timeout=900)
        stack.wait_healthy()
        up_again = time.monotonic() - up_started
        assert champion()["version"] == "1"
        assert set(keys) <= set(s3_keys())
        assert product_files() == files
        assert [d["date"] for d in api_days()] == [d["date"] for d in days]
        for run_id in runs["daily"] + runs["retrain"]:
            assert state_of(run_id)["type"] == "COMPLETED"
        phase("down, up -> healthy, checks")

        # ---- the worker killed during a daily run, then started again: the next run completes
        worker = stack.container("prefect-worker")
        killed_run = create_run("daily")
        deadline = time.monotonic() + 120
        while state_of(killed_run)["type"] != "RUNNING":
            assert time.monotonic() < deadline, state_of(killed_run)
            time.sleep(0.3)
        run(["docker", "kill", worker])
        killed_state = state_of(killed_run)
        assert killed_state["type"] != "COMPLETED", "the daily run finished before the worker was killed"
        # Prefect does not notice by itself that the run's process died with the worker: it stays
        # RUNNING (docs/deployment.md, "Operating": how to find and close such runs)
        run(["docker", "start", worker])
        stack.wait_healthy()
        next_run = create_run("daily")
        wait_run(next_run, "daily after the kill", 600)
        assert champion()["version"] == "1"
        assert set(keys) <= set(s3_keys())
        after = product_files()
        assert set(files) <= set(after), set(files) - set(after)
        days_after = api_days()
        assert [d["date"] for d in days_after] == [d["date"] for d in days]
        phase("worker killed mid-run, next run")

        # ---- runs when data arrive: the watcher sees a new day land and starts one `daily` run
        arrival = root / "arrival"
        run([str(Path(sys.executable).parent / "etfuse"), "synth", "--out", str(arrival), "--bbox", ",".join(map(str, BBOX)),
             "--start", ARRIVAL_DAY, "--end", ARRIVAL_DAY, "--resolution", "0.02"], timeout=300,
            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=root)
        stack.compose("up", "--detach", "--no-build", "watcher", timeout=300)
        deadline = time.monotonic() + 180
        while "watching /data/etfuse/landing" not in stack.logs("watcher"):
            assert time.monotonic() < deadline, stack.logs("watcher")
            time.sleep(1)
        time.sleep(3)                                        # its inotify watch is set right after that line
        archive = root / "arrival.tar"
        with tarfile.open(archive, "w") as tar:             # one day, as a fetcher delivers it
            tar.add(next((arrival / "landing" / "era5land").glob("*.nc")),
                    arcname=f"landing/era5land/era5land_{ARRIVAL_DAY.replace('-', '')}.nc")
            for path in sorted((arrival / "landing" / "modis").glob("*")):
                tar.add(path, arcname=f"landing/modis/{path.name}")
        landed_at = time.monotonic()
        stack.exec("prefect-worker", "tar", "-x", "-C", "/data/etfuse", stdin=archive.read_bytes())
        arrival_runs: list[dict] = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            status, arrival_runs = http("POST", f"{prefect_api}/flow_runs/filter", auth=prefect_auth,
                                        body={"flow_runs": {"tags": {"all_": ["etfuse-arrival"]}}})
            assert status == 200, arrival_runs
            if arrival_runs and all(r["state"]["type"] in ENDED for r in arrival_runs):
                break
            time.sleep(2)
        landed_to_done = time.monotonic() - landed_at
        # two files, one delivery: one run, and it did the work
        assert [r["state"]["type"] for r in arrival_runs] == ["COMPLETED"], \
            (arrival_runs, stack.logs("watcher", "prefect-worker"))
        assert f"etfuse_et_{ARRIVAL_DAY}.nc" in {Path(f).name for f in product_files()}
        assert api_days()[-1]["date"] == ARRIVAL_DAY
        phase("watcher: a day lands -> its daily run -> the day in the product")
        print(f"compose e2e: up->healthy {up_to_healthy:.0f} s (after down/up {up_again:.0f} s); "
              f"killed run left {killed_state['type']}; landed -> arrival run completed {landed_to_done:.0f} s; "
              f"phases [s]: {timings}; images [MB]: {images}; "
              f"total {time.monotonic() - started:.0f} s")
    finally:
        if synth.poll() is None:
            synth.kill()
        stack.compose("down", "--volumes", "--remove-orphans", timeout=300, check=False)
        shutil.rmtree(root, ignore_errors=True)
