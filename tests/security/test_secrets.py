"""No secret is committed: every file git tracks is scanned for private keys, cloud and chat tokens,
URLs with an embedded password, and (in .env.example, the compose file and infra/) secret settings
holding a literal value.  ``.env`` (the real secrets, docs/deployment.md) is ignored by git, and
``.env.example`` holds only the ``change-me`` placeholder the services refuse (docs/reliability.md,
"Security").

The scanner is tested on planted secrets too, so a broken pattern fails here instead of passing
silently.  The planted values are assembled at run time: this file must pass its own scan.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

# ----------------------------------------------------------------------------- the scanner
#: (kind, pattern) searched in every tracked text file
TOKEN_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("Slack token", re.compile(r"\bxox[baprs]-[0-9A-Za-z][0-9A-Za-z-]{8,}")),
    ("Slack webhook", re.compile(r"https://hooks\.slack\.com/services/T[0-9A-Z]+/B[0-9A-Z]+/[0-9A-Za-z]{16,}")),
    ("GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    ("GitHub token", re.compile(r"\bgithub_pat_[A-Za-z0-9_]{40,}\b")),
)

#: scheme://user:password@host; the password is judged by ``is_placeholder``.  A URL's user information
#: ends at the first ``/``, ``?`` or ``#`` (RFC 3986), so ``host:port?to=ops@example.org`` is no password.
URL_WITH_PASSWORD = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://(?P<user>[^\s:/?#@'\"`<>]*):(?P<password>[^\s@/?#'\"`<>]+)@")

#: a setting whose name says it is a secret, with ``=`` (env, shell, ini) or ``: `` (YAML, JSON) after it
SECRET_ASSIGNMENT = re.compile(
    r"""(?P<key>\b[A-Za-z0-9_.-]*?(?:PASSWORD|PASSWD|PWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|AUTH_STRING|CREDENTIAL)"""
    r"""[A-Za-z0-9_]*)["']?(?:\s*=\s*|:\s+)""", re.IGNORECASE)

#: values that are obviously not a real secret
PLACEHOLDERS = {"change-me", "changeme", "change_me", "password", "passwd", "pass", "pw", "pwd", "secret", "token",
                "example", "none", "null", "redacted", "dummy", "placeholder", "your-password", "..."}


def is_placeholder(value: str) -> bool:
    """Empty, only references to variables (``${VAR}``, ``${VAR:?...}``, ``$VAR``; ``%(var)s``, ``{{ var }}``),
    a placeholder word (``change-me``), a mask (``***``, ``xxxx``) or ``<something>``."""
    v = value.strip().strip("'\"").strip()
    if v.startswith(("%(", "{{")):
        return True
    # what is left once every ${VAR...} / $VAR reference is taken out (``${USER:-admin}:${PASSWORD:?}`` -> ``:``)
    v = re.sub(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*", "", v).strip(" :@/")
    if not v:
        return True
    if v.lower() in PLACEHOLDERS or "change-me" in v.lower():
        return True
    if re.fullmatch(r"[*x.]+", v, re.IGNORECASE) or re.fullmatch(r"<[^<>]+>", v):
        return True
    return False


def assignment_value(raw: str) -> str:
    """The value of ``KEY=raw`` / ``key: raw``: a quoted string's content, else the first word
    (comments, trailing commas and brackets dropped)."""
    raw = raw.strip()
    if raw[:1] in ("'", '"'):
        end = raw.find(raw[0], 1)
        return raw[1:end] if end > 0 else raw[1:]
    if raw.startswith("${"):                     # a compose/shell reference, maybe with a message after :?
        return raw
    return re.split(r"[\s,;}\]#]", raw, maxsplit=1)[0]


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}: {self.excerpt}"


def _mask(text: str) -> str:
    """Never print a found secret whole into the test log."""
    text = text.strip()
    return text[:12] + "..." if len(text) > 12 else text


def scan_text(text: str, path: str, *, check_assignments: bool) -> list[Finding]:
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for kind, pattern in TOKEN_PATTERNS:
            for m in pattern.finditer(line):
                found.append(Finding(path, number, kind, _mask(m.group(0))))
        for m in URL_WITH_PASSWORD.finditer(line):
            if not is_placeholder(m.group("password")):
                found.append(Finding(path, number, "URL with an embedded password", _mask(m.group(0))))
        if check_assignments and not line.lstrip().startswith("#"):
            for m in SECRET_ASSIGNMENT.finditer(line):
                if re.search(r"_(?:FILE|PATH)$", m.group("key"), re.IGNORECASE):
                    continue                 # ``credentials_file: /run/secrets/x`` names a file, it holds no secret
                value = assignment_value(line[m.end():])
                if value[:1] not in ("{", "[") and not is_placeholder(value):
                    found.append(Finding(path, number, f"literal value for {m.group('key')}", _mask(value)))
    return found


def is_config_file(path: str) -> bool:
    """Files where a secret setting must never hold a literal: env examples, compose files, infra/."""
    name = Path(path).name
    return (name.startswith(".env") or name.startswith(("docker-compose", "compose."))
            or path.startswith("infra/")) and not path.startswith("infra/compose-spec/")


def read_text(path: Path) -> str | None:
    """A file's text, or None for a binary file (NUL bytes or not UTF-8)."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def scan_files(root: Path, names: list[str]) -> tuple[list[Finding], int]:
    findings, scanned = [], 0
    for name in names:
        path = root / name
        if not path.is_file() or path.is_symlink():
            continue
        text = read_text(path)
        if text is None:
            continue
        scanned += 1
        findings += scan_text(text, name, check_assignments=is_config_file(name))
    return findings, scanned


# ----------------------------------------------------------------------------- the repository
def git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=check, timeout=60)


@pytest.fixture(scope="module")
def tracked() -> list[str]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed: cannot list the tracked files")
    inside = git("rev-parse", "--is-inside-work-tree", check=False)
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        pytest.skip(f"{REPO} is not a git checkout (an sdist or a copy): nothing is tracked to scan")
    names = [n for n in git("ls-files", "-z").stdout.split("\0") if n]
    assert names, "git ls-files listed nothing"
    return names


def test_no_secret_in_any_tracked_file(tracked):
    findings, scanned = scan_files(REPO, tracked)
    assert scanned >= 0.9 * len([n for n in tracked if (REPO / n).is_file()]) - 5, "most tracked files were skipped"
    assert not findings, "secrets in tracked files:\n" + "\n".join(map(str, findings))


def test_the_secret_files_are_ignored_and_never_tracked(tracked):
    assert git("check-ignore", "-q", ".env", check=False).returncode == 0, ".env is not ignored by git (.gitignore)"
    assert ".env" not in tracked
    env_like = [n for n in tracked if Path(n).name.startswith(".env") and Path(n).name != ".env.example"]
    assert not env_like, f"environment files are tracked: {env_like}"
    keys = [n for n in tracked if Path(n).suffix in (".pem", ".key", ".p12", ".pfx", ".jks") or Path(n).name in
            ("id_rsa", "id_ed25519", "credentials", ".netrc", ".pgpass", "basic_auth.db")]
    assert not keys, f"key or credential files are tracked: {keys}"


def env_example() -> dict[str, str]:
    values = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=VALUE: {line!r}"
            values[key.strip()] = value.strip()
    return values


def test_env_example_holds_only_placeholders_the_services_refuse():
    values = env_example()
    secret = {k: v for k, v in values.items() if re.search(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN|AUTH_STRING", k)}
    assert len(secret) >= 8, sorted(values)       # the database, S3, MLflow and Prefect secrets
    assert {k: v for k, v in secret.items() if v != "change-me"} == {}
    # every secret compose passes on is one of these, required (``:?``): an unset one stops compose
    compose = (REPO / "docker-compose.yml").read_text()
    for key in secret:
        assert re.search(r"\$\{" + key + r":\?", compose), f"{key} is not a required variable in docker-compose.yml"
    # the placeholder is refused by the images' entry point and by the infra scripts that take a secret
    entrypoint = (REPO / "infra/docker/entrypoint.sh").read_text()
    assert "*change-me*" in entrypoint and "exit 78" in entrypoint
    refused_names = ("PASSWORD", "SECRET", "AUTH_STRING", "ACCESS_KEY", "TOKEN")
    for key in secret:
        assert any(n in key for n in refused_names), f"the entry point would not check {key}"
    for script in ("infra/postgres/init/10-etfuse-databases.sh", "infra/seaweedfs/start.sh"):
        assert "*change-me*" in (REPO / script).read_text(), f"{script} does not refuse the placeholder"


# ----------------------------------------------------------------------------- the scanner finds what it should
def planted() -> dict[str, str]:
    """One line per kind of secret, built at run time so that this file itself holds none."""
    b64 = "MIIEowIBAAKCAQEA7bq9" + "x" * 40
    return {
        "private key": "-----BEGIN " + "RSA PRIVATE KEY-----\n" + b64 + "\n-----END RSA PRIVATE KEY-----",
        "openssh key": "-----BEGIN " + "OPENSSH PRIVATE KEY-----",
        "AWS access key id": "aws_key = " + "AKIA" + "Q7ZK4WJ2M5N8R3TB",
        "Slack token": "token: " + "xox" + "b-2417538690-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "GitHub token": "GH=" + "gh" + "p_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
        "URL with an embedded password": "MLFLOW_TRACKING_URI=" + "https://etfuse:" + "Tr0ub4dor-3x@mlflow.example.org",
    }


def test_the_scanner_finds_planted_secrets(tmp_path):
    lines = planted()
    names = []
    for k, (label, text) in enumerate(lines.items()):
        path = tmp_path / f"planted_{k}.txt"
        path.write_text(f"an ordinary first line\n{text}\n")
        names.append(path.name)
    findings, scanned = scan_files(tmp_path, names)
    assert scanned == len(lines)
    by_file = {f.path: f for f in findings}
    assert set(by_file) == set(names), (findings, names)
    kinds = {f.kind for f in findings}
    assert {"private key", "AWS access key id", "Slack token", "GitHub token", "URL with an embedded password"} <= kinds
    assert all(f.line == 2 for f in findings)
    assert all(len(f.excerpt) <= 15 for f in findings)          # never the whole secret in the log
    (tmp_path / "binary.bin").write_bytes(b"\0\1" + lines["AWS access key id"].encode())
    assert scan_files(tmp_path, ["binary.bin"]) == ([], 0)      # binary files are skipped, not misread


def test_the_scanner_finds_literal_secret_settings_in_config_files(tmp_path):
    literal = "hunter2" + "-Pa55w0rd"
    env = tmp_path / ".env.example"
    env.write_text(f"POSTGRES_PASSWORD={literal}\nS3_SECRET_KEY='{literal}'\nPREFECT_AUTH_PASSWORD=change-me\n"
                   "MLFLOW_DB_PASSWORD=\n# OLD_PASSWORD=" + literal + "\nS3_BUCKET=etfuse-mlflow\n")
    compose = tmp_path / "docker-compose.yml"
    compose.write_text("services:\n  db:\n    environment:\n"
                       f"      POSTGRES_PASSWORD: {literal}\n"
                       "      PGPASSWORD: ${MLFLOW_DB_PASSWORD:?set it in .env}\n"
                       "      PREFECT_API_AUTH_STRING: ${PREFECT_AUTH_USER:-admin}:${PREFECT_AUTH_PASSWORD:?set it}\n"
                       f'      "secretKey": "{literal}"\n'
                       "      AUTH_STRING: ${PREFECT_AUTH_USER:-admin}:" + literal + "\n"
                       "      POSTGRES_PASSWORD_FILE: /run/secrets/postgres_password\n"
                       "      credentials_file: /etc/prometheus/secrets/api_token\n")
    findings = scan_text(env.read_text(), ".env.example", check_assignments=True)
    assert [(f.line, f.kind) for f in findings] == [(1, "literal value for POSTGRES_PASSWORD"),
                                                    (2, "literal value for S3_SECRET_KEY")]
    findings = scan_text(compose.read_text(), "docker-compose.yml", check_assignments=True)
    assert [f.line for f in findings] == [4, 7, 8], findings
    assert is_config_file("docker-compose.yml") and is_config_file(".env.example") and is_config_file("infra/x.sh")
    assert not is_config_file("tests/etfuse/test_alerts.py")    # test fixtures may hold throw-away values


@pytest.mark.parametrize("url,secret", [
    ("postgresql://mlflow:" + "s3cr3t-Value@db:5432/mlflow", True),
    ("https://admin:" + "A9f!kq2Lw@prefect.example.org/api", True),
    ("postgresql://mlflow:${MLFLOW_DB_PASSWORD}@postgres:5432/mlflow", False),
    ("postgresql://mlflow:$PGPASSWORD@postgres/mlflow", False),
    ("postgresql://mlflow:change-me@postgres/mlflow", False),
    ("postgresql://mlflow:***@db/mlflow", False),
    ("postgresql://user:<password>@host/db", False),
    ("postgresql://mlflow@postgres:5432/mlflow", False),
    ("http://127.0.0.1:5000/health", False),
    ("mailto://127.0.0.1:2525?from=etfuse@example.org&to=ops@example.org", False),
    ("mailto://etfuse:" + "Xk29-qLw7@smtp.example.org:587?to=ops@example.org", True),
])
def test_urls_with_passwords(url, secret):
    found = scan_text(f"uri = {url}\n", "docs/x.md", check_assignments=False)
    assert bool(found) is secret, found
