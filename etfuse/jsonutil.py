"""JSON-serialisable copies of what validation results, alerts and ledgers carry."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd


def _time(value: dt.datetime) -> str:
    """Aware times as ISO UTC with ``Z``; naive midnights (day labels) as ``YYYY-MM-DD``."""
    if value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    ts = pd.Timestamp(value)
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.isoformat()


def to_jsonable(value: Any) -> Any:
    """A JSON-serialisable copy: numpy scalars and arrays, times, paths, sets, pydantic models,
    objects with ``to_json_dict()``; NaN and NaT become None."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_jsonable(v) for v in value), key=str)
    if isinstance(value, dt.datetime):
        return None if pd.isna(value) else _time(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else _time(pd.Timestamp(value).to_pydatetime())
    if isinstance(value, (np.generic, np.ndarray)):
        return to_jsonable(value.tolist())
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "model_dump"):
        return to_jsonable(value.model_dump(mode="json"))
    if hasattr(value, "to_json_dict"):
        return to_jsonable(value.to_json_dict())
    return str(value)
