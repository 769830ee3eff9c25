"""The promotion gate: when may a challenger replace the champion?

A pure decision over numbers measured on the *same* held-out station-days (whole held-out
stations and the final held-out period, see design.md §4): the challenger's RMSE must be

* below the champion's RMSE minus ``margin_mm`` (skipped when there is no champion yet), and
* below the RMSE of raw GLEAM and of raw ERA5-Land on those station-days.

Every value must be finite; a missing or NaN number never lets a model through.  The scores drop
station-days where a prediction is missing (training/evaluate.py compares models on the days they
all have), so a model that returns NaN on *some* held-out station-days could still score a finite
RMSE: when the candidate's held-out predictions are given, every one must be finite and >= 0
(the check ``predictions``), the same rule serving applies to every cell (serving/predictor.py).
The registry (training/registry.py) records the decision, these numbers and the reasons on the
model version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class GateCheck:
    """One criterion of the gate: its name, whether it passed, and a sentence with the numbers."""

    name: str  # "champion" | "gleam" | "era5land" | "heldout" | "finite" | "predictions"
    passed: bool
    text: str


def _finite(value: float | None) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def check_predictions(predictions: Sequence[float] | np.ndarray) -> GateCheck:
    """Every held-out prediction of the candidate is a finite, non-negative ET [mm/day]."""
    values = np.asarray(predictions, dtype=np.float64).ravel()
    nonfinite = int((~np.isfinite(values)).sum())
    negative = int((values < 0).sum())
    if values.size == 0:
        return GateCheck("predictions", False, "no held-out prediction of the candidate to check")
    if nonfinite or negative:
        return GateCheck("predictions", False,
                         f"the candidate returned {nonfinite} non-finite and {negative} negative values on "
                         f"{values.size} held-out station-days; ET must be finite and >= 0 everywhere")
    return GateCheck("predictions", True, f"all {values.size} held-out predictions are finite and >= 0")


def evaluate_gate(candidate_rmse: float, champion_rmse: float | None, gleam_rmse: float, era5land_rmse: float,
                  *, margin_mm: float = 0.0, champion_version: int | None = None,
                  heldout_matches: bool | None = None,
                  candidate_predictions: Sequence[float] | np.ndarray | None = None) -> list[GateCheck]:
    """All checks of the gate; the candidate passes iff every check passed.

    ``champion_rmse`` None means there is no champion yet (the champion check is then skipped).
    ``heldout_matches`` False (the candidate and the champion were not scored on the same
    station-days) fails the gate; None means "not checked".  ``candidate_predictions`` (the
    candidate's ET on every held-out station-day, missing observations included) adds the
    ``predictions`` check; None means "not checked".  RMSEs in mm/day.
    """
    if margin_mm < 0 or not math.isfinite(margin_mm):
        raise ValueError(f"promotion margin must be a finite number >= 0 mm/day, got {margin_mm}")
    checks: list[GateCheck] = []
    if candidate_predictions is not None:
        predictions = check_predictions(candidate_predictions)
        if not predictions.passed:
            return [predictions]
        checks.append(predictions)
    named = {"candidate": candidate_rmse, "gleam": gleam_rmse, "era5land": era5land_rmse}
    if champion_rmse is not None:
        named["champion"] = champion_rmse
    bad = [f"{k}={v!r}" for k, v in named.items() if not _finite(v) or v < 0]
    if bad:
        checks.append(GateCheck("finite", False, "RMSEs must be finite numbers >= 0; got " + ", ".join(bad)))
        return checks
    if heldout_matches is False:
        checks.append(GateCheck("heldout", False, "the candidate and the champion were not scored on the same "
                                                  "held-out station-days (fingerprints differ)"))
    elif heldout_matches:
        checks.append(GateCheck("heldout", True, "scored on the same held-out station-days as the candidate's run"))
    if champion_rmse is None:
        checks.append(GateCheck("champion", True, "no champion yet: the first version that beats both raw "
                                                  "sources becomes champion"))
    else:
        who = f"champion v{champion_version}" if champion_version is not None else "champion"
        bar = champion_rmse - margin_mm
        if candidate_rmse < bar:
            checks.append(GateCheck("champion", True, f"beats {who}: RMSE {candidate_rmse:.4f} < {champion_rmse:.4f} "
                                                      f"- margin {margin_mm:g} = {bar:.4f} mm/d"))
        else:
            checks.append(GateCheck("champion", False, f"does not beat {who}: RMSE {candidate_rmse:.4f} >= "
                                                       f"{champion_rmse:.4f} - margin {margin_mm:g} = {bar:.4f} mm/d"))
    for key, label, value in (("gleam", "raw GLEAM", gleam_rmse), ("era5land", "raw ERA5-Land", era5land_rmse)):
        if candidate_rmse < value:
            checks.append(GateCheck(key, True, f"beats {label}: RMSE {candidate_rmse:.4f} < {value:.4f} mm/d"))
        else:
            checks.append(GateCheck(key, False, f"does not beat {label}: RMSE {candidate_rmse:.4f} >= "
                                                f"{value:.4f} mm/d"))
    return checks


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on one model version, as recorded on it (tags ``etfuse.gate.*``)."""

    version: int
    promoted: bool
    candidate_rmse: float
    champion_rmse: float | None
    champion_version: int | None  # the champion when the gate ran (None: there was none)
    gleam_rmse: float
    era5land_rmse: float
    margin_mm: float
    checks: tuple[GateCheck, ...]
    actor: str
    decided_at: datetime
    heldout_sha256: str | None = None

    @property
    def reasons(self) -> list[str]:
        """Failed checks first (why not promoted), then the passed ones."""
        return [c.text for c in self.checks if not c.passed] + [c.text for c in self.checks if c.passed]

    @property
    def decision(self) -> str:
        return "promoted" if self.promoted else "rejected"

    def summary(self) -> str:
        head = f"v{self.version} {self.decision}"
        return head + ": " + "; ".join(self.reasons)
