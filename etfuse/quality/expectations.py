"""The building blocks of etfuse's Great Expectations suites: severities, an expectation with
etfuse's ``meta`` (severity, check, explanation), a row-condition column, and a check that could
not run.

They live apart from :mod:`etfuse.quality.suites` so that every module that builds expectations
(the suites, the drift checks) imports them from one place below both, without a cycle.
Great Expectations is imported on first use only (the import costs seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")


@lru_cache(maxsize=1)
def _gxe():
    import great_expectations.expectations as gxe      # slow import: first use only
    return gxe


def column(name: str):
    """A GE row-condition column (``column(\"month\") == 6``)."""
    from great_expectations.expectations.row_conditions import Column
    return Column(name)


def expectation(kind: str, check: str, severity: Severity, explain: str, **kwargs: Any) -> "Expectation":
    """A GE expectation of class ``kind`` with etfuse's ``meta`` (severity, check, explain)."""
    if severity not in SEVERITIES:
        raise ValueError(f"check {check!r}: severity must be one of {SEVERITIES}, got {severity!r}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return getattr(_gxe(), kind)(meta={"severity": severity, "check": check, "explain": explain}, **kwargs)


@dataclass(frozen=True)
class Skipped:
    """A check that could not run on this batch (reported as info, never a failure)."""

    check: str
    frame: str
    reason: str
    severity: Severity = "info"
