"""Who did it: the one rule for the actor recorded with a promotion, rollback or training run.

``$USER@hostname`` (the login name from ``getpass`` when ``$USER`` is unset, ``unknown`` when the
container has no passwd entry).  Flows record ``flow:<name>`` instead; the CLI's ``--by`` wins.
"""

from __future__ import annotations

import getpass
import os
import socket

__all__ = ["default_actor"]


def default_actor() -> str:
    """``$USER@hostname``, what the CLI records when no ``--by`` is given."""
    try:
        user = os.environ.get("USER") or getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
