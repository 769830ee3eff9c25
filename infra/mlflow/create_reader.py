"""One-shot step of docker-compose.yml (service mlflow-reader): the MLflow user the API logs in with.

The API only follows the champion alias and downloads the model's files: it needs MLflow's read
path and nothing else.  With ``default_permission = READ`` (infra/mlflow/basic_auth.ini) a user that
is not an admin may read every experiment and registered model but not change them: it cannot move
the champion alias, delete a version or edit a run it did not create.  This script creates that
user as the admin (MLflow's ``users/create`` REST call), or sets its password again when it exists
(``users/update-password``), so a changed MLFLOW_READER_PASSWORD in .env takes effect at the next
``make up``; and it makes sure the user is not an admin.  Idempotent; standard library only.

Environment: MLFLOW_TRACKING_URI, MLFLOW_ADMIN_USER, MLFLOW_ADMIN_PASSWORD, MLFLOW_READER_USER,
MLFLOW_READER_PASSWORD.  Exit codes: 0 done, 2 configuration missing, 1 the server refused.
tests/infra/test_mlflow_reader.py runs it against a real ``mlflow server --app-name basic-auth``.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request


def call(base: str, method: str, path: str, auth: tuple[str, str], body: dict | None = None,
         query: dict | None = None) -> tuple[int, dict]:
    url = f"{base.rstrip('/')}/api/2.0/mlflow/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw or b"{}")
    except ValueError:
        return status, {"message": raw.decode(errors="replace")[:300]}


def user_body(user: tuple[str, str]) -> dict:
    """The JSON body of the two user calls below: the name and its secret."""
    return dict(zip(("username", "password"), user))


def ensure_reader(base: str, admin: tuple[str, str], reader: tuple[str, str]) -> str:
    """Create the read-only user or reset its password; returns ``created`` or ``updated``."""
    if reader[0] == admin[0]:
        raise ValueError(f"MLFLOW_READER_USER is the admin ({admin[0]}): the API must not log in as the admin")
    status, answer = call(base, "GET", "users/get", admin, query={"username": reader[0]})
    if status == 200:
        action = "updated"
        status, answer = call(base, "PATCH", "users/update-password", admin, body=user_body(reader))
    elif status == 404:
        action = "created"
        status, answer = call(base, "POST", "users/create", admin, body=user_body(reader))
    if status != 200:
        raise RuntimeError(f"MLflow at {base} answered {status} for user {reader[0]}: {answer}")
    status, answer = call(base, "PATCH", "users/update-admin", admin, body={"username": reader[0], "is_admin": False})
    if status != 200:
        raise RuntimeError(f"MLflow at {base} answered {status} when making {reader[0]} a non-admin: {answer}")
    return action


def main() -> int:
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_ADMIN_USER", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_READER_USER",
             "MLFLOW_READER_PASSWORD")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        print(f"mlflow-reader: {', '.join(missing)} not set", file=sys.stderr)
        return 2
    env = os.environ
    try:
        action = ensure_reader(env["MLFLOW_TRACKING_URI"], (env["MLFLOW_ADMIN_USER"], env["MLFLOW_ADMIN_PASSWORD"]),
                               (env["MLFLOW_READER_USER"], env["MLFLOW_READER_PASSWORD"]))
    except ValueError as exc:
        print(f"mlflow-reader: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:
        print(f"mlflow-reader: {exc}", file=sys.stderr)
        return 1
    print(f"mlflow-reader: read-only user {env['MLFLOW_READER_USER']} {action}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
