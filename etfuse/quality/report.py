"""HTML reports of validations, under ``$ETFUSE_HOME/reports/``, linked from every alert.

One page per validation at ``reports/<source>/<YYYY-MM-DD>/<file>-<hash8>.html`` (the batch's first
day; ``hash8`` = the first 8 hex digits of the file's SHA-256, so a re-delivered identical file
overwrites its own report and a revised one gets a new page), a JSON twin (``.json``, the
``ValidationResult.to_json()``), and an index (``reports/index.html``, rebuilt from the append-only
``reports/index.jsonl``; newest first).

The page is rendered from the Great Expectations validation results (every expectation with its
severity, success, expected thresholds and observed values).  GE's own Data Docs renderer works
offline and is fast, but its pages pull Bootstrap, jQuery and fonts from CDNs and a logo from an
external host, so on an offline machine they show unstyled and in a browser they call out; these
pages are self-contained instead.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from etfuse.clock import utcnow
from etfuse.sources.common import file_sha256
from etfuse.tempfiles import write_atomic

if TYPE_CHECKING:
    from etfuse.quality.validate import CheckOutcome, ValidationResult
    from etfuse.settings import Settings

INDEX_JSONL = "index.jsonl"
INDEX_HTML = "index.html"
#: entries shown on the index page (the JSON-lines file keeps them all)
INDEX_SHOWN = 2000

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.3rem;margin:0 0 .5rem} h2{font-size:1.1rem;margin-top:1.5rem}
table{border-collapse:collapse;width:100%;font-size:.85rem} th,td{border:1px solid #ccc;padding:.25rem .4rem;
vertical-align:top;text-align:left} th{background:#f0f0f0} code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;
font-size:.8rem;white-space:pre-wrap;word-break:break-word;margin:0}
.verdict{padding:.5rem .8rem;border-radius:4px;font-weight:600;display:inline-block;margin:.3rem 0}
.quarantined{background:#f8d7da;color:#721c24} .warned{background:#fff3cd;color:#856404}
.accepted{background:#d4edda;color:#155724}
tr.fail-critical td{background:#fbe3e5} tr.fail-warning td{background:#fff8e1} tr.fail-info td{background:#eef5ff}
tr.skipped td{color:#666} .sev{font-weight:600} .meta td:first-child{width:11rem;font-weight:600}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "batch"


def content_hash8(file: Path | None, result: "ValidationResult") -> str:
    """First 8 hex digits of the file's SHA-256 (of the outcomes when there is no readable file)."""
    if file is not None and Path(file).is_file():
        return file_sha256(file)[:8]
    h = hashlib.sha256(json.dumps([result.source, result.file, [d.isoformat() for d in result.days],
                                   [o.to_json() for o in result.outcomes]], sort_keys=True, default=str).encode())
    return h.hexdigest()[:8]


def report_path(result: "ValidationResult", *, settings: Settings, file: Path | None = None) -> Path:
    """``$ETFUSE_HOME/reports/<source>/<YYYY-MM-DD>/<file>-<hash8>.html`` for this validation."""
    day = result.days[0].isoformat() if result.days else "undated"
    label = Path(file).name if file is not None else (result.file.split()[0] if result.file else "batch")
    return settings.folder("reports") / result.source / day / f"{_safe_name(label)}-{content_hash8(file, result)}.html"


def _verdict(result: "ValidationResult") -> tuple[str, str]:
    if not result.accepted:
        return "quarantined", "QUARANTINED: failed critical check(s)"
    if result.warnings:
        return "warned", "ACCEPTED WITH WARNINGS"
    return "accepted", "ACCEPTED: every critical and warning check passed"


def _json_cell(value: object) -> str:
    if not value:
        return ""
    return f"<pre>{_esc(json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False, default=str))}</pre>"


def _row(o: "CheckOutcome") -> str:
    if o.expectation == "skipped":
        cls, state = "skipped", "skipped"
    elif o.success:
        cls, state = "pass", "pass"
    else:
        cls, state = f"fail-{o.severity}", "FAIL"
    return (f'<tr class="{cls}"><td><code>{_esc(o.check)}</code></td><td class="sev">{_esc(o.severity)}</td>'
            f"<td>{state}</td><td>{_esc(o.frame)}</td><td><code>{_esc(o.expectation)}</code></td>"
            f"<td>{_esc(o.column or '')}</td><td>{_json_cell(o.expected)}</td><td>{_json_cell(o.observed)}</td>"
            f"<td>{_esc(o.explain)}</td></tr>")


def _table(outcomes: Iterable["CheckOutcome"]) -> str:
    head = ("<tr><th>check</th><th>severity</th><th>result</th><th>frame</th><th>GE expectation</th>"
            "<th>column</th><th>expected</th><th>observed</th><th>meaning</th></tr>")
    return f"<table>{head}{''.join(_row(o) for o in outcomes)}</table>"


def render_html(result: "ValidationResult", *, validated_at: datetime | None = None, ge_version: str = "") -> str:
    """The self-contained report page of one validation."""
    validated_at = validated_at or utcnow()
    css_class, verdict = _verdict(result)
    failed = [o for o in result.outcomes if not o.success]
    ran = [o for o in result.outcomes if o.expectation != "skipped"]
    counts = {sev: (sum(1 for o in ran if o.severity == sev),
                    sum(1 for o in ran if o.severity == sev and not o.success)) for sev in ("critical", "warning", "info")}
    days = result.days
    day_text = (f"{days[0].isoformat()} .. {days[-1].isoformat()} ({len(days)} days)" if len(days) > 1
                else days[0].isoformat() if days else "none")
    meta_rows = [("source", result.source), ("file", result.file or "-"), ("days", day_text),
                 ("validated at", validated_at.isoformat(timespec="seconds")), ("seconds", f"{result.seconds:.2f}"),
                 ("expectations", ", ".join(f"{sev}: {n} run, {k} failed" for sev, (n, k) in counts.items())),
                 ("Great Expectations", ge_version or "-")]
    meta = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in meta_rows)
    failed_html = _table(failed) if failed else "<p>No check failed.</p>"
    shown = Path(result.file).name if result.file and "/" in result.file and " " not in result.file else result.file
    title = f"etfuse validation: {result.source} {shown or ''}".strip()
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_esc(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1>"
            f'<div class="verdict {css_class}">{_esc(verdict)}</div>'
            f'<table class="meta">{meta}</table>'
            f"<h2>Failed checks ({len(failed)})</h2>{failed_html}"
            f"<h2>Every check ({len(result.outcomes)})</h2>{_table(result.outcomes)}"
            f'<p><a href="../../{INDEX_HTML}">all reports</a></p></body></html>')   # <source>/<day>/ -> reports/


def write_report(result: "ValidationResult", *, settings: Settings, ge_version: str,
                 file: Path | None = None) -> Path:
    """Write the page and its JSON twin, add it to the index; returns the page's absolute path.

    ``ge_version`` (the Great Expectations release that ran the checks) is passed in by the
    validator rather than looked up here, so this module never imports the validator.
    """
    validated_at = utcnow()
    path = report_path(result, settings=settings, file=file).resolve()
    result_json = {**result.to_json(), "report_path": str(path)}
    write_atomic(path, render_html(result, validated_at=validated_at, ge_version=ge_version))
    write_atomic(path.with_suffix(".json"), json.dumps(result_json, indent=1, default=str))
    root = settings.folder("reports").resolve()
    entry = {"validated_at": validated_at.isoformat(timespec="seconds"), "source": result.source,
             "file": result.file, "first_day": result.days[0].isoformat() if result.days else None,
             "last_day": result.days[-1].isoformat() if result.days else None,
             "accepted": result.accepted, "critical": sorted({o.check for o in result.critical_failures}),
             "warnings": sorted({o.check for o in result.warnings}), "report": path.relative_to(root).as_posix()}
    with open(root / INDEX_JSONL, "a", encoding="utf-8") as f:       # one short append: atomic on POSIX
        f.write(json.dumps(entry) + "\n")
    write_index(root)
    return path


def read_index(root: Path) -> list[dict]:
    """Entries of ``reports/index.jsonl`` (oldest first); unreadable lines are skipped."""
    path = Path(root) / INDEX_JSONL
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def write_index(root: Path) -> Path:
    """Rebuild ``reports/index.html`` from the JSON-lines index, newest first."""
    entries = read_index(root)[-INDEX_SHOWN:][::-1]
    rows = []
    for e in entries:
        verdict = "quarantined" if not e.get("accepted") else "warned" if e.get("warnings") else "accepted"
        days = e.get("first_day") or ""
        if e.get("last_day") and e.get("last_day") != e.get("first_day"):
            days += f" .. {e['last_day']}"
        link = f'<a href="{_esc(e.get("report", ""))}">{_esc(e.get("file") or "batch")}</a>'
        cells = [_esc(e.get("validated_at", "")), _esc(e.get("source", "")), _esc(days), link,
                 f'<span class="verdict {verdict}">{verdict}</span>',
                 _esc(", ".join(e.get("critical", []))), _esc(", ".join(e.get("warnings", [])))]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    page = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>etfuse validation reports</title>"
            f"<style>{_CSS}</style></head><body><h1>etfuse validation reports</h1>"
            f"<p>{len(entries)} most recent validations, newest first.</p><table><tr><th>validated at</th><th>source</th>"
            f"<th>days</th><th>report</th><th>verdict</th><th>failed critical</th><th>failed warnings</th></tr>"
            f"{''.join(rows)}</table></body></html>")
    path = Path(root) / INDEX_HTML
    write_atomic(path, page)
    return path
