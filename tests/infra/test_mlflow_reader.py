"""infra/mlflow/create_reader.py against a real ``mlflow server --app-name basic-auth`` on loopback
(SQLite, the stack's basic_auth.ini with only the database replaced): the API's user is created,
reads the registry (the champion alias, the model version's files) and cannot change it (move the
alias, delete the version); a second run resets the password; the admin is refused as reader."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import http, mlflow_server

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "mlflow" / "create_reader.py"
ADMIN = ("admin", "Adm1nPassw0rdLong")
MODEL = "etfuse-gcn-gru"


def run_script(url: str, reader: tuple[str, str], admin: tuple[str, str] = ADMIN) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "MLFLOW_ADMIN_USER": admin[0], "MLFLOW_ADMIN_PASSWORD": admin[1],
           "MLFLOW_READER_USER": reader[0], "MLFLOW_READER_PASSWORD": reader[1]}
    return subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_the_api_user_reads_the_registry_and_cannot_change_it(tmp_path):
    pytest.importorskip("flask_wtf", reason="mlflow's basic-auth app needs Flask-WTF (mlflow[auth])")
    ini = (REPO / "infra" / "mlflow" / "basic_auth.ini").read_text().replace(
        "postgresql://mlflow@postgres:5432/mlflow_auth", f"sqlite:///{tmp_path / 'auth.db'}")
    (tmp_path / "basic_auth.ini").write_text(ini)
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "basic_auth.ini"), "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
           "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1], "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 24}
    with mlflow_server(tmp_path / "mlflow", extra_args=("--app-name", "basic-auth"), extra_env=env) as (url, _):
        api = f"{url}/api/2.0/mlflow"
        # the admin registers a model with a champion, as training does
        assert http("POST", f"{api}/registered-models/create", auth=ADMIN, body={"name": MODEL})[0] == 200
        status, experiment = http("POST", f"{api}/experiments/create", auth=ADMIN, body={"name": "etfuse"})
        assert status == 200, experiment
        status, run = http("POST", f"{api}/runs/create", auth=ADMIN, body={"experiment_id": experiment["experiment_id"]})
        assert status == 200, run
        run_id = run["run"]["info"]["run_id"]
        status, version = http("POST", f"{api}/model-versions/create", auth=ADMIN,
                               body={"name": MODEL, "source": f"runs:/{run_id}/model", "run_id": run_id})
        assert status == 200, version
        assert http("POST", f"{api}/registered-models/alias", auth=ADMIN,
                    body={"name": MODEL, "alias": "champion", "version": "1"})[0] == 200

        reader = ("reader", "Read0nlyPassw0rd")
        result = run_script(url, reader)
        assert result.returncode == 0, result.stderr
        assert "read-only user reader created" in result.stdout
        status, alias = http("GET", f"{api}/registered-models/alias?name={MODEL}&alias=champion", auth=reader)
        assert status == 200 and alias["model_version"]["version"] == "1"
        assert http("GET", f"{api}/model-versions/get?name={MODEL}&version=1", auth=reader)[0] == 200
        assert http("GET", f"{api}/runs/get?run_id={run_id}", auth=reader)[0] == 200
        # ... and cannot change what the API serves
        assert http("POST", f"{api}/registered-models/alias", auth=reader,
                    body={"name": MODEL, "alias": "champion", "version": "1"})[0] == 403
        assert http("DELETE", f"{api}/model-versions/delete", auth=reader, body={"name": MODEL, "version": "1"})[0] == 403
        assert http("GET", f"{api}/users/get?username=admin", auth=reader)[0] == 403   # no user administration

        # a second run (make up with a new password in .env) resets the password
        again = ("reader", "An0therPassw0rd9")
        result = run_script(url, again)
        assert result.returncode == 0 and "read-only user reader updated" in result.stdout, result.stderr
        assert http("GET", f"{api}/registered-models/alias?name={MODEL}&alias=champion", auth=again)[0] == 200
        assert http("GET", f"{api}/registered-models/alias?name={MODEL}&alias=champion", auth=reader)[0] == 401

        # the admin as reader, a wrong admin password: refused with the reason
        result = run_script(url, ADMIN)
        assert result.returncode == 2 and "must not log in as the admin" in result.stderr
        result = run_script(url, ("reader", "x" * 16), admin=("admin", "wrong-password-here"))
        assert result.returncode == 1 and "answered 401" in result.stderr
