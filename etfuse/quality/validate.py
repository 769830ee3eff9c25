"""Run a source's suites on one incoming batch and turn GE's results into check outcomes.

``validate(source, ds, settings=..., file=..., context=...)`` is what the ingest flow calls right
after a reader.  It builds the frames (:mod:`etfuse.quality.frames`), the expectations
(:mod:`etfuse.quality.suites`), runs one GE Checkpoint per frame and returns a
:class:`ValidationResult`: ``accepted`` is False when any critical check failed (quarantine),
``warnings`` are the failed warning checks (accept and alert), and ``report_path`` is the HTML
report (:mod:`etfuse.quality.report`).

Great Expectations costs about 3.5 s to import and a few tens of milliseconds per object
created, so one ephemeral context lives per process (``gx_runtime()``), with one pandas data
source, one dataframe asset per ``<source>.<frame>`` and a checkpoint per distinct suite, cached
by the fingerprint of its expectations (a suite changes only when settings, today's date, the
file's claimed period or the reference statistics change).  Batch data and stored validation
results are released after every run, so a long ingest does not accumulate data frames.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import pandas as pd
import xarray as xr

from etfuse.clock import utcnow
from etfuse.jsonutil import to_jsonable
from etfuse.quality.frames import Frames, build_frames, numeric_summary, source_spec
from etfuse.quality.report import write_report
from etfuse.quality.expectations import SEVERITIES, Skipped
from etfuse.quality.suites import SuitePlan, build_suites
from etfuse.settings import Settings

if TYPE_CHECKING:
    from great_expectations.checkpoint import Checkpoint
    from great_expectations.expectations import Expectation

log = logging.getLogger(__name__)

#: expectation kwargs shown as "expected" in outcomes (value sets are cut to a few entries)
_EXPECTED_KEYS = ("min_value", "max_value", "strict_min", "strict_max", "mostly", "value_set", "regex", "column_list")
_MAX_LISTED = 12
#: index names of the frames (etfuse.quality.frames): what GE's unexpected-index entries are keyed by
_INDEX_NAMES = ("day", "row", "station_id", "variable")


# --------------------------------------------------------------------------- public types
@dataclass(frozen=True)
class CheckOutcome:
    """One expectation's verdict on one batch, in etfuse's terms."""

    check: str                  # short name, e.g. "et_range", "future_dates", "lst_units_look_celsius"
    severity: str               # "critical" | "warning" | "info"
    success: bool
    expectation: str            # GE expectation type, or "skipped"
    column: str | None
    observed: dict              # JSON-serialisable observed values
    explain: str
    frame: str = ""             # which frame of etfuse.quality.frames it ran on
    expected: dict = field(default_factory=dict)   # the thresholds it was run with

    def to_json(self) -> dict:
        return {"check": self.check, "severity": self.severity, "success": self.success,
                "expectation": self.expectation, "column": self.column, "frame": self.frame,
                "expected": self.expected, "observed": self.observed, "explain": self.explain}


@dataclass(frozen=True)
class ValidationContext:
    """What a validation needs besides the batch (all injectable, for operations and tests)."""

    today: date                                    # injectable clock for future-date checks
    reference_stats: dict | None = None            # from drift.load_reference_stats(...) or None
    #: e.g. ``lambda src, day: store.read_grid_day(src, day)``, for consistency checks
    other_source_day: Callable[[str, date], xr.Dataset | None] | None = None
    known_station_ids: frozenset[str] | None = None


@dataclass
class ValidationResult:
    source: str
    file: str | None
    days: list[date]
    outcomes: list[CheckOutcome]
    report_path: Path | None
    seconds: float

    @property
    def critical_failures(self) -> list[CheckOutcome]:
        return [o for o in self.outcomes if o.severity == "critical" and not o.success]

    @property
    def warnings(self) -> list[CheckOutcome]:
        """Failed warning checks."""
        return [o for o in self.outcomes if o.severity == "warning" and not o.success]

    @property
    def accepted(self) -> bool:
        return not self.critical_failures

    def failed_checks(self) -> list[str]:
        return sorted({o.check for o in self.critical_failures + self.warnings})

    def summary(self) -> str:
        """One line for logs and alerts."""
        name = self.file or self.source
        if not self.accepted:
            return (f"{name}: quarantined, failed critical check(s) "
                    f"{', '.join(sorted({o.check for o in self.critical_failures}))}")
        if self.warnings:
            return f"{name}: accepted with warning(s) {', '.join(sorted({o.check for o in self.warnings}))}"
        return f"{name}: accepted, all checks passed"

    def to_json(self) -> dict:
        """Machine-readable verdict for quarantine reasons and alerts."""
        return {
            "source": self.source,
            "file": self.file,
            "days": [d.isoformat() for d in self.days],
            "accepted": self.accepted,
            "summary": self.summary(),
            "critical_failures": [o.to_json() for o in self.critical_failures],
            "warnings": [o.to_json() for o in self.warnings],
            "outcomes": [o.to_json() for o in self.outcomes],
            "report_path": str(self.report_path) if self.report_path is not None else None,
            "seconds": round(self.seconds, 3),
        }


# --------------------------------------------------------------------------- JSON values
# --------------------------------------------------------------------------- the GE runtime
class GxRuntime:
    """One ephemeral GE context per process, with cached assets and checkpoints.

    Thread-safe: GE contexts are not, so runs are serialised by a lock (validation is cheap next to
    reading the files).
    """

    MAX_CHECKPOINTS = 48

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self.version = gx.__version__
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.datasource = self.context.data_sources.add_pandas("etfuse")
        self._batch_definitions: dict[str, Any] = {}
        self._checkpoints: OrderedDict[str, "Checkpoint"] = OrderedDict()
        self.lock = threading.RLock()

    def _batch_definition(self, asset_name: str):
        if asset_name not in self._batch_definitions:
            asset = self.datasource.add_dataframe_asset(name=asset_name)
            self._batch_definitions[asset_name] = asset.add_batch_definition_whole_dataframe(f"{asset_name}.whole")
        return self._batch_definitions[asset_name]

    def checkpoint(self, asset_name: str, expectations: list["Expectation"], result_format: dict) -> "Checkpoint":
        """The checkpoint of this exact suite (expectations, thresholds, metadata), created once."""
        body = json.dumps([e.configuration.to_json_dict() for e in expectations], sort_keys=True, default=str)
        key = hashlib.sha1(f"{asset_name}|{json.dumps(result_format, sort_keys=True)}|{body}".encode()).hexdigest()[:16]
        name = f"{asset_name}.{key}"
        if name in self._checkpoints:
            self._checkpoints.move_to_end(name)
            return self._checkpoints[name]
        gx = self._gx
        suite = self.context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=self._batch_definition(asset_name), suite=suite))
        checkpoint = self.context.checkpoints.add(
            gx.Checkpoint(name=name, validation_definitions=[definition], result_format=result_format))
        self._checkpoints[name] = checkpoint
        while len(self._checkpoints) > self.MAX_CHECKPOINTS:
            old, _ = self._checkpoints.popitem(last=False)
            self._forget(old)
        return checkpoint

    def _forget(self, name: str) -> None:
        for factory in (self.context.checkpoints, self.context.validation_definitions, self.context.suites):
            try:
                factory.delete(name=name)
            except Exception as exc:  # pragma: no cover - GE bookkeeping only; the cache entry is gone anyway
                log.debug("could not delete GE object %s: %s", name, exc)

    def run(self, checkpoint: "Checkpoint", frame: pd.DataFrame):
        """Run a checkpoint on a frame; returns the ``ExpectationSuiteValidationResult``."""
        try:
            result = checkpoint.run(batch_parameters={"dataframe": frame})
            return next(iter(result.run_results.values()))
        finally:
            self._release()

    def _release(self) -> None:
        """Drop the batch data and stored results GE keeps after a run (memory over a long ingest)."""
        engine = self.datasource.get_execution_engine()
        engine.batch_manager.batch_data_cache.clear()
        engine.batch_manager.reset_batch_cache()
        store = self.context.validation_results_store
        for key in store.list_keys():
            store.remove_key(key)


_runtime: GxRuntime | None = None
_runtime_lock = threading.Lock()


def gx_runtime() -> GxRuntime:
    """The process's GE runtime, created on first use (import and context creation are slow)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = GxRuntime()
        return _runtime


# --------------------------------------------------------------------------- GE results -> outcomes
def _expected(kwargs: Mapping[str, Any]) -> dict:
    out = {}
    for key in _EXPECTED_KEYS:
        if key in kwargs and kwargs[key] is not None:
            value = kwargs[key]
            if key == "value_set" and isinstance(value, (list, tuple, set)) and len(value) > _MAX_LISTED:
                value = sorted(value, key=str)[:_MAX_LISTED] + [f"... {len(value) - _MAX_LISTED} more"]
            out[key] = value
    condition = kwargs.get("row_condition")
    if condition:
        out["row_condition"] = repr(condition)
    return to_jsonable(out)


def _where(index_list: list, frame: pd.DataFrame) -> list:
    """GE's unexpected index entries -> readable places (day, station-day, or time/lat/lon of a cell)."""
    places = []
    for entry in index_list:
        if isinstance(entry, Mapping):
            label = next((entry[k] for k in _INDEX_NAMES if k in entry), None)
            places.append(label if label is not None else dict(entry))
        elif isinstance(entry, (int, np.integer)) and {"time", "lat", "lon"} <= set(frame.columns) \
                and 0 <= int(entry) < len(frame):
            row = frame.iloc[int(entry)]
            places.append({"time": row["time"], "lat": round(float(row["lat"]), 4), "lon": round(float(row["lon"]), 4)})
        else:
            places.append(entry)
    return to_jsonable(places)


def _observed(result: Mapping[str, Any], frame: pd.DataFrame, kwargs: Mapping[str, Any], exception: Any) -> dict:
    observed: dict[str, Any] = {}
    if "observed_value" in result:
        observed["observed_value"] = result["observed_value"]
    for key in ("element_count", "unexpected_count", "unexpected_percent", "missing_count"):
        if key in result:
            observed[key] = result[key]
    if result.get("partial_unexpected_list"):
        observed["unexpected_examples"] = result["partial_unexpected_list"]
    if result.get("partial_unexpected_index_list"):
        observed["unexpected_where"] = _where(result["partial_unexpected_index_list"], frame)
    if result.get("partial_missing_list"):
        observed["missing"] = result["partial_missing_list"]
    column = kwargs.get("column")
    bounded = "min_value" in kwargs or "max_value" in kwargs
    if column and column in frame.columns and bounded and not kwargs.get("row_condition") \
            and "observed_value" not in result:
        observed.update(numeric_summary(frame, column))
    if column and column not in frame.columns:
        observed["error"] = f"column {column!r} is missing from the batch"
    elif exception:
        observed["error"] = exception
    return to_jsonable(observed)


def _exception_text(r) -> str | None:
    info = r.exception_info or {}
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():                     # keyed by metric id when several metrics failed
        if isinstance(value, Mapping) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def outcomes_from_gx(suite_result, frame: pd.DataFrame, frame_name: str) -> list[CheckOutcome]:
    """One :class:`CheckOutcome` per expectation of a GE suite validation result."""
    outcomes = []
    for r in suite_result.results:
        config = r.expectation_config
        meta = dict(config.meta or {})
        kwargs = dict(config.kwargs)
        column = kwargs.get("column") or (",".join(kwargs["column_list"]) if kwargs.get("column_list") else None)
        exception = _exception_text(r)
        outcomes.append(CheckOutcome(
            check=str(meta.get("check", config.type)), severity=str(meta.get("severity", "critical")),
            success=bool(r.success) and exception is None, expectation=str(config.type), column=column,
            observed=_observed(dict(r.result or {}), frame, kwargs, exception),
            explain=str(meta.get("explain", "")), frame=frame_name, expected=_expected(kwargs)))
    return outcomes


def _skipped_outcome(s: Skipped) -> CheckOutcome:
    return CheckOutcome(check=s.check, severity=s.severity, success=True, expectation="skipped", column=None,
                        observed={"skipped": s.reason}, explain=s.reason, frame=s.frame)


# --------------------------------------------------------------------------- the entry point
def run_plan(plan: SuitePlan, frames: Frames, *, settings: Settings) -> list[CheckOutcome]:
    """Run every frame's suite through its cached checkpoint."""
    runtime = gx_runtime()
    result_format = {"result_format": "SUMMARY",
                     "partial_unexpected_count": int(settings.quality.partial_unexpected_count)}
    outcomes: list[CheckOutcome] = []
    with runtime.lock:
        for frame_name, expectations in plan.suites.items():
            if not expectations:
                continue
            frame = frames[frame_name]
            checkpoint = runtime.checkpoint(f"{plan.source}.{frame_name}", expectations, result_format)
            outcomes += outcomes_from_gx(runtime.run(checkpoint, frame), frame, frame_name)
    return outcomes


def validate(source: str, ds: xr.Dataset, *, settings: Settings, file: Path | None = None,
             context: ValidationContext | None = None) -> ValidationResult:
    """Validate one reader batch of ``source``; see the module docstring.

    ``ds`` is exactly what ``etfuse.sources.read_source(source, path, settings=settings)``
    returned.  ``context`` defaults to today's UTC date and no reference statistics, other
    sources or extra known station ids.
    """
    started = time.perf_counter()
    source_spec(source)
    if context is None:
        context = ValidationContext(today=utcnow().date())
    frames = build_frames(source, ds, settings=settings, file=file, other_source_day=context.other_source_day)
    plan = build_suites(frames, settings=settings, today=context.today, reference_stats=context.reference_stats,
                        known_station_ids=context.known_station_ids)
    outcomes = run_plan(plan, frames, settings=settings) + [_skipped_outcome(s) for s in plan.skipped]
    order = {s: i for i, s in enumerate(SEVERITIES)}
    outcomes.sort(key=lambda o: (o.success, order.get(o.severity, 9)))
    file_label = str(file) if file is not None else (str(ds.attrs.get("source_files", "")) or None)
    result = ValidationResult(source=source, file=file_label, days=frames.days, outcomes=outcomes,
                              report_path=None, seconds=time.perf_counter() - started)
    if settings.quality.write_reports:
        result.report_path = write_report(result, settings=settings, ge_version=gx_runtime().version, file=file)
    result.seconds = time.perf_counter() - started
    level = logging.WARNING if not result.accepted or result.warnings else logging.INFO
    log.log(level, "%s (%.2f s)", result.summary(), result.seconds)
    return result
