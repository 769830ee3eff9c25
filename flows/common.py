"""What every flow shares: settings from a config path and an optional runtime root."""

from __future__ import annotations

from etfuse.settings import Settings, load_settings


def flow_settings(config: str | None = None, home: str | None = None) -> Settings:
    """Flows take plain parameters (Prefect stores them); settings are rebuilt inside the run."""
    return load_settings(config, **({"home": home} if home else {}))
