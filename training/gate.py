"""The promotion gate: when may a challenger replace the champion?

A pure decision over numbers measured on the *same* held-out station-days (whole held-out
stations and the final held-out period, see docs/model-card.md): the challenger's RMSE must be

* below the champion's RMSE minus ``margin_mm`` (skipped when there is no champion yet), and
* below the RMSE of raw GLEAM and of raw ERA5-Land on those station-days, and
* (when the evaluation protocol's paired comparisons are given, see training/protocol) below the
  champion's and the strongest baseline's RMSE by more than the 95 % block-bootstrap interval of
  the difference: a model that only ties the baseline, or a constant, is refused.  A raw product is
  a weak yardstick (a constant training mean beats it on our worlds); the baselines are not.

Every value must be finite; a missing or NaN number never lets a model through.  The scores drop
station-days where a prediction is missing (training/evaluate.py compares models on the days they
all have), so a model that returns NaN on *some* held-out station-days could still score a finite
RMSE: when the candidate's held-out predictions are given, every one must be finite and >= 0
(the check ``predictions``), the same rule serving applies to every cell (serving/predictor.py).
The registry (training/registry/lifecycle.py) records the decision, these numbers and the reasons on the
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

    name: str  # "champion" | "gleam" | "era5land" | "heldout" | "finite" | "predictions" | "varies"
    #            | "beyond_interval:<reference>"
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


@dataclass(frozen=True)
class Comparison:
    """RMSE(candidate) - RMSE(reference) on the same station-days, with its paired 95 % block-bootstrap
    interval [mm/day] (training/protocol/bootstrap.difference_interval).  Negative = candidate better."""

    reference: str          # e.g. "champion v3", "baseline hgb"
    diff: float
    lo: float
    hi: float


def check_beyond_interval(comparison: Comparison) -> GateCheck:
    """The candidate beats ``reference`` by more than the bootstrap interval: the whole interval < 0."""
    name = f"beyond_interval:{comparison.reference}"
    values = (comparison.diff, comparison.lo, comparison.hi)
    if not all(_finite(v) for v in values):
        return GateCheck(name, False, f"no finite RMSE difference with {comparison.reference}: {values!r}")
    span = (f"RMSE difference with {comparison.reference} {comparison.diff:+.4f} mm/d, 95 % interval "
            f"[{comparison.lo:+.4f}, {comparison.hi:+.4f}]")
    if comparison.hi < 0:
        return GateCheck(name, True, f"beats {comparison.reference} beyond the bootstrap interval: {span}")
    if comparison.lo > 0:
        return GateCheck(name, False, f"worse than {comparison.reference}: {span}")
    return GateCheck(name, False, f"only ties {comparison.reference} (the interval contains 0): {span}")


def check_varies(predictions: Sequence[float] | np.ndarray, min_sd_mm: float = 1e-3) -> GateCheck:
    """The candidate's held-out predictions vary: a constant (e.g. the training mean) is no model."""
    values = np.asarray(predictions, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    sd = float(values.std()) if values.size else 0.0
    if sd < min_sd_mm:
        return GateCheck("varies", False, f"the candidate is constant on the held-out station-days (standard "
                                          f"deviation {sd:.2g} < {min_sd_mm:g} mm/d)")
    return GateCheck("varies", True, f"the candidate's held-out predictions vary (standard deviation {sd:.3f} mm/d)")


def evaluate_gate(candidate_rmse: float, champion_rmse: float | None, gleam_rmse: float, era5land_rmse: float,
                  *, margin_mm: float = 0.0, champion_version: int | None = None,
                  heldout_matches: bool | None = None,
                  candidate_predictions: Sequence[float] | np.ndarray | None = None,
                  comparisons: Sequence[Comparison] = ()) -> list[GateCheck]:
    """All checks of the gate; the candidate passes iff every check passed.

    ``champion_rmse`` None means there is no champion yet (the champion check is then skipped).
    ``heldout_matches`` False (the candidate and the champion were not scored on the same
    station-days) fails the gate; None means "not checked".  ``candidate_predictions`` (the
    candidate's ET on every held-out station-day, missing observations included) adds the
    ``predictions`` and ``varies`` checks; None means "not checked".  ``comparisons`` (paired
    differences with the champion and the strongest baseline) each add a ``beyond_interval`` check.
    RMSEs in mm/day.
    """
    if margin_mm < 0 or not math.isfinite(margin_mm):
        raise ValueError(f"promotion margin must be a finite number >= 0 mm/day, got {margin_mm}")
    checks: list[GateCheck] = []
    if candidate_predictions is not None:
        predictions = check_predictions(candidate_predictions)
        if not predictions.passed:
            return [predictions]
        checks.append(predictions)
        checks.append(check_varies(candidate_predictions))
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
        checks.append(GateCheck("champion", True, "no champion yet: the first version that passes every "
                                                  "other check becomes champion"))
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
    checks.extend(check_beyond_interval(c) for c in comparisons)
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
