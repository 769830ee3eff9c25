"""Orchestration: the ``etfuse`` CLI and (later) the Prefect flows.  Only calls into the layers below."""
