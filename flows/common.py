"""What every flow and every CLI command shares: settings from a config path and an optional runtime
root, and the CLI's global options (``--config``, ``--debug``).

The CLI state lives here, not in ``flows/cli.py``, so that command modules (``flows/cli_*.py``) can
read it without importing the CLI module that imports them.
"""

from __future__ import annotations

import os
from pathlib import Path

from etfuse.settings import Settings, load_settings

#: the CLI's global options, set by ``etfuse``'s callback before any command runs
CLI_STATE: dict = {"config": None, "debug": False}


def flow_settings(config: str | None = None, home: str | None = None) -> Settings:
    """Flows take plain parameters (Prefect stores them); settings are rebuilt inside the run."""
    return load_settings(config, **({"home": home} if home else {}))


def cli_settings(**overrides) -> Settings:
    """The CLI's settings (``--config`` or ETFUSE_CONFIG, then ETFUSE_* variables, then ``overrides``).

    A configured ``prefect.api_url`` becomes PREFECT_API_URL (unless that is set) before any flow
    imports Prefect, which reads it only at import.
    """
    loaded = load_settings(CLI_STATE["config"], **overrides)
    if loaded.prefect.api_url:
        os.environ.setdefault("PREFECT_API_URL", loaded.prefect.api_url)
    return loaded


def cli_config_path() -> str | None:
    """The config file in use (--config or ETFUSE_CONFIG), absolute, for flows run elsewhere."""
    path = CLI_STATE["config"] or os.environ.get("ETFUSE_CONFIG")
    return str(Path(path).resolve()) if path else None
