"""Credentials for the providers: from the environment, a ``.env`` file or ``~/.netrc``, never from
settings files, and never logged.

Lookup order for a value: the process environment, then ``fetch.env_file`` (default ``./.env``),
which only fills variables that are not set.  A host login falls back to its ``.netrc`` entry
(``$NETRC`` or ``~/.netrc``).
"""

from __future__ import annotations

import netrc
import os
from dataclasses import dataclass, field
from pathlib import Path

from etfuse.settings import Settings


@dataclass(frozen=True)
class Login:
    """A user name and password; the password stays out of ``repr`` (and so out of logs)."""

    username: str
    password: str = field(repr=False)
    origin: str = "environment"


def dotenv_values(settings: Settings) -> dict[str, str]:
    """Variables of the ``.env`` file (``fetch.env_file`` or ``./.env``); empty when there is none."""
    path = Path(settings.fetch.env_file) if settings.fetch.env_file else Path.cwd() / ".env"
    if not path.is_file():
        return {}
    from dotenv import dotenv_values as read
    return {k: v for k, v in read(path).items() if v is not None}


def env_value(settings: Settings, name: str) -> str | None:
    """``name`` from the environment, else from the ``.env`` file; empty counts as unset."""
    value = os.environ.get(name) or dotenv_values(settings).get(name)
    return value or None


def netrc_login(host: str) -> Login | None:
    """The ``machine host`` entry of ``$NETRC`` / ``~/.netrc``, if any."""
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    if not path.is_file():
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError):
        return None
    if not entry or not entry[0]:
        return None
    return Login(entry[0], entry[2] or "", origin=str(path))


def login(settings: Settings, prefix: str, host: str | None) -> Login | None:
    """``<prefix>_USERNAME`` / ``<prefix>_PASSWORD`` (environment or .env), else ``.netrc`` for ``host``."""
    user = env_value(settings, f"{prefix}_USERNAME")
    if user:
        return Login(user, env_value(settings, f"{prefix}_PASSWORD") or "",
                     origin=f"${prefix}_USERNAME/${prefix}_PASSWORD")
    return netrc_login(host) if host else None


def export_dotenv(settings: Settings, names: tuple[str, ...]) -> None:
    """Copy ``names`` from the ``.env`` file into the environment (unset ones only), for client
    libraries that read only the environment (cdsapi, earthaccess)."""
    values = dotenv_values(settings)
    for name in names:
        if not os.environ.get(name) and values.get(name):
            os.environ[name] = values[name]
