"""The alert model: one problem, told the same way to every channel.

An :class:`Alert` says how bad (``severity``), where from (``source``), what kind of problem
(``kind``), which provider file and days, one line for a person (``summary``), the machine details
(``details``) and where the validation report is (``report_url``).  Its ``fingerprint`` says which
problems are "identical" for grouping: severity + source + kind + the sorted names in ``checks``
(the failed checks), never the file name or the days, so the same problem on 100 daily files is
one group.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import traceback
import uuid
from pathlib import Path, PurePath
from typing import Any, Iterable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from etfuse.clock import as_utc, iso_utc, utcnow  # noqa: F401 - re-exported: alerts use them from here
from etfuse.jsonutil import to_jsonable

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
#: Higher is worse.
SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}

#: How a kind reads in a summary ("ERA5L.nc quarantined: failed ...").
_KIND_PHRASE = {"quarantined": "quarantined", "validation_warning": "accepted with warnings",
                "revision": "revised", "flow_failed": "failed"}


def iso_day(value: Any) -> str:
    """``YYYY-MM-DD`` from a date, datetime, pandas/numpy timestamp or ISO string."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if hasattr(value, "date") and callable(value.date):             # pandas.Timestamp
        return value.date().isoformat()
    text = str(value).strip()
    try:
        return dt.date.fromisoformat(text[:10]).isoformat()
    except ValueError:
        raise ValueError(f"expected an ISO date (YYYY-MM-DD) for a day, found {value!r}") from None


def format_days(days: Iterable[str], *, max_ranges: int = 6) -> str:
    """Consecutive days as ranges: ``2021-06-01..2021-06-05, 2021-06-09`` (+ "and N more ranges")."""
    parsed = sorted({dt.date.fromisoformat(d) for d in days})
    if not parsed:
        return "-"
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in parsed:
        if ranges and day - ranges[-1][1] == dt.timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    parts = [a.isoformat() if a == b else f"{a.isoformat()}..{b.isoformat()}" for a, b in ranges]
    if len(parts) > max_ranges:
        parts = parts[:max_ranges - 1] + [f"and {len(parts) - max_ranges + 1} more ranges"]
    text = ", ".join(parts)
    return text if len(parsed) == 1 else f"{text} ({len(parsed)} days)"


def format_list(items: Iterable[str], *, limit: int = 5) -> str:
    items = list(items)
    if not items:
        return "-"
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} (+{len(items) - limit} more)"


def file_url(path: str | PurePath) -> str:
    """``file://`` URL of a local path (made absolute)."""
    return Path(path).expanduser().resolve().as_uri()


class DigestInfo(BaseModel):
    """What a digest summarises: the alerts suppressed in one group's window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    group_id: str
    #: Suppressed alerts summarised by this digest.
    count: int = Field(ge=1)
    #: When the group's first alert (the one delivered) arrived.
    since: dt.datetime
    #: End of the grouping window.
    window_end: dt.datetime
    #: First and last suppressed alert.
    first_at: dt.datetime
    last_at: dt.datetime
    #: Distinct files of the suppressed alerts (at most 1000 kept; files_total counts all).
    files: list[str] = Field(default_factory=list)
    files_total: int = 0
    #: Distinct report URLs of the suppressed alerts (at most 100 kept).
    report_urls: list[str] = Field(default_factory=list)
    #: Id of the alert that opened the group.
    first_alert_id: str | None = None


class Alert(BaseModel):
    """One problem, as every channel reports it.  Immutable; build with keywords."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    severity: Severity
    #: Which source the problem is in (``era5land``, ``gleam`` ...), or ``flow`` for pipeline failures.
    source: str = Field(min_length=1)
    #: Short machine category: ``quarantined``, ``validation_warning``, ``revision``, ``flow_failed`` ...
    kind: str = Field(min_length=1)
    #: One line a person reads.
    summary: str = Field(min_length=1)
    #: The provider file concerned (path or name), if any.
    file: str | None = None
    #: The days concerned, ISO dates, sorted and distinct.
    days: list[str] = Field(default_factory=list)
    #: What identifies the problem for grouping, e.g. the failed check names (sorted, distinct).
    checks: list[str] = Field(default_factory=list)
    #: JSON-serialisable facts: failed checks with observed values, an exception's message ...
    details: dict[str, Any] = Field(default_factory=dict)
    #: ``file://`` or ``http(s)://`` URL of the validation report (a plain local path is converted).
    report_url: str | None = None
    created_at: dt.datetime = Field(default_factory=utcnow)
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    #: Set on digests: the suppressed alerts this one stands for.
    digest: DigestInfo | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_derived(cls, data: Any) -> Any:
        # a JSON-lines record read back carries the computed fingerprint; it is derived, not input
        if isinstance(data, Mapping) and "fingerprint" in data:
            data = {k: v for k, v in data.items() if k != "fingerprint"}
        return data

    @field_validator("severity", mode="before")
    @classmethod
    def _lower_severity(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("summary", mode="before")
    @classmethod
    def _one_line(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = " ".join(value.split())
            if len(value) > 1000:
                value = value[:999] + "…"
        return value

    @field_validator("file", mode="before")
    @classmethod
    def _file_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, PurePath) else value

    @field_validator("days", mode="before")
    @classmethod
    def _iso_days(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, (str, dt.date)):
            value = [value]
        return sorted({iso_day(v) for v in value})

    @field_validator("checks", mode="before")
    @classmethod
    def _sorted_checks(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        return sorted({str(v) for v in value})

    @field_validator("details", mode="before")
    @classmethod
    def _jsonable_details(cls, value: Any) -> Any:
        return {} if value is None else to_jsonable(value)

    @field_validator("report_url", mode="before")
    @classmethod
    def _report_url(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if isinstance(value, PurePath) or (isinstance(value, str) and "://" not in value):
            return file_url(value)
        return value

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: dt.datetime) -> dt.datetime:
        return as_utc(value)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fingerprint(self) -> str:
        """Same value for "identical" problems: severity + source + kind + sorted checks."""
        key = json.dumps([self.severity, self.source, self.kind, self.checks], separators=(",", ":"))
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Alert":
        """The alert of a JSON-lines ``alert``/``digest`` record (its log-only keys are dropped)."""
        return cls.model_validate({k: v for k, v in record.items() if k in cls.model_fields})

    @property
    def file_name(self) -> str | None:
        return PurePath(self.file).name if self.file else None

    @property
    def days_text(self) -> str:
        return format_days(self.days)


def worst_severity(severities: Iterable[str], default: str = "info") -> str:
    """The highest of ``critical > warning > info``; unknown names count as ``warning``."""
    ranks = [SEVERITY_RANK.get(str(s).strip().lower(), SEVERITY_RANK["warning"]) for s in severities]
    return SEVERITIES[max(ranks)] if ranks else default


def alert_from_validation(result_json: Mapping[str, Any], *, kind: str,
                          report_url: str | PurePath | None = None) -> Alert:
    """An alert from ``ValidationResult.to_json()``.

    Severity = the worst severity among failed outcomes; ``checks`` = the failed check names (so
    the same failure on many files groups together); ``details["failed"]`` keeps every failed
    outcome with its observed values.  ``report_url`` defaults to the result's ``report_path``.
    """
    source = str(result_json.get("source") or "unknown")
    file = result_json.get("file")
    outcomes = list(result_json.get("outcomes") or [])
    failed = [o for o in outcomes if not o.get("success", False)]
    names = [str(o.get("check") or o.get("expectation") or "unnamed") for o in failed]
    severity = worst_severity([o.get("severity", "warning") for o in failed])
    name = PurePath(str(file)).name if file else source
    phrase = _KIND_PHRASE.get(kind, kind.replace("_", " "))
    if failed:
        labelled = [f"{n} ({str(o.get('severity', 'warning')).lower()})" for n, o in zip(names, failed)]
        summary = f"{name} {phrase}: failed {format_list(labelled, limit=4)}"
    else:
        summary = f"{name} {phrase}: all {len(outcomes)} checks passed"
    days = result_json.get("days") or []
    if days:
        summary += f" [{format_days(days, max_ranges=2)}]"
    details = {
        "accepted": result_json.get("accepted"),
        "checks_run": len(outcomes),
        "failed": [{key: o.get(key) for key in ("check", "severity", "expectation", "column", "observed", "explain")
                    if key in o} for o in failed],
    }
    if result_json.get("report_path"):
        details["report_path"] = str(result_json["report_path"])
    if report_url is None and result_json.get("report_path"):
        report_url = str(result_json["report_path"])
    return Alert(severity=severity, source=source, kind=kind, summary=summary, file=file, days=days,
                 checks=names, details=details, report_url=report_url)


def alert_from_exception(exc: BaseException, *, source: str = "flow", kind: str = "flow_failed",
                         file: str | PurePath | None = None, days: Iterable[Any] = (),
                         step: str | None = None, severity: Severity = "critical",
                         report_url: str | PurePath | None = None) -> Alert:
    """An alert for a pipeline failure; problems with the same exception type (and step) group together."""
    etype = type(exc).__name__
    message = " ".join(str(exc).split()) or etype
    where = f"{step} " if step else ""
    target = f" on {PurePath(str(file)).name}" if file else ""
    summary = f"{where}{phrase if (phrase := _KIND_PHRASE.get(kind)) else kind}{target}: {etype}: {message}"
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    details = {"error": etype, "message": str(exc), "traceback": "".join(tb)[-4000:]}
    if step:
        details["step"] = step
    checks = [etype] + ([f"step:{step}"] if step else [])
    return Alert(severity=severity, source=source, kind=kind, summary=summary[:300], file=file,
                 days=list(days), checks=checks, details=details, report_url=report_url)
