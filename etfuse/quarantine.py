"""Quarantine: where a refused raw file waits, untouched, with the reason it was refused.

``quarantine/<source>/<name>`` holds the file and ``<name>.reason.json`` the stage that refused
it, the failed expectations with observed values, the time and the report.  ``quarantined`` lists
them (``etfuse quarantine list``) and ``release`` moves one back to landing after a fix so it is
ingested again (``etfuse quarantine release``).  etfuse/ingest.py decides what is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from etfuse.clock import utcnow
from etfuse.errors import EtfuseError
from etfuse.landing import LandingFile, safe_name
from etfuse.landing import move_file as _move
from etfuse.settings import Settings
from etfuse.sources.common import file_sha256
from etfuse.tempfiles import temporary_name

_REASON = ".reason.json"


class QuarantineError(EtfuseError):
    """A quarantine operation cannot be done (unknown file, name clash)."""



def quarantine(path: Path, *, settings: Settings, source: str, sha256: str, reason: dict) -> Path:
    """Move a refused raw file to ``quarantine/<source>/`` untouched, with ``<name>.reason.json``."""
    folder = settings.folder("quarantine") / source
    name = safe_name(path.name)
    if name.endswith(_REASON):             # would be taken for (and overwritten by) another file's reason record
        name += ".data"
    dest = folder / name
    if dest.exists() and file_sha256(dest) != sha256:
        dest = folder / f"{sha256[:12]}-{name}"
    record = {"file": path.name, "source": source, "sha256": sha256,
              "quarantined_at": utcnow().isoformat(timespec="seconds"), **reason}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(dest.with_name(dest.name + _REASON))
    try:                                  # the reason first: a full disk fails here, with the file still in landing
        tmp.write_text(json.dumps(record, indent=2, default=str))
        if dest.exists():
            path.unlink()                 # identical bytes already quarantined under this name
        else:
            _move(path, dest)
        tmp.replace(dest.with_name(dest.name + _REASON))
    finally:
        tmp.unlink(missing_ok=True)
    return dest



def quarantined(settings: Settings) -> list[dict]:
    """Every file in quarantine with its reason record (a file whose record is missing is listed too)."""
    out = []
    root = settings.folder("quarantine")
    for data in sorted(p for p in root.glob("*/*") if p.is_file() and not p.name.startswith(".")
                       and not p.name.endswith(_REASON)):
        reason_file = data.with_name(data.name + _REASON)
        try:
            record = json.loads(reason_file.read_text())
        except (OSError, ValueError):
            record = {"error": "no reason record (the quarantine was interrupted); see the ingest logs"}
        failed = [o["check"] for o in record.get("outcomes", []) if not o.get("success", True)]
        out.append({"source": data.parent.name, "file": data.name, "path": str(data),
                    "stage": record.get("stage"), "quarantined_at": record.get("quarantined_at"),
                    "why": ", ".join(failed) or record.get("error", ""), "report": record.get("report_path")})
    return out


def release(settings: Settings, name: str) -> LandingFile:
    """Move a quarantined file back to ``landing/<source>/`` (after a fix) so it is ingested again.

    ``name`` is a quarantined file's name, ``SOURCE/NAME``, or its path inside the quarantine folder;
    any other path is refused (release never touches a file outside quarantine).
    """
    root = settings.folder("quarantine")
    given = Path(name)
    if given.is_absolute():
        try:
            inside = given.resolve().relative_to(root.resolve())
        except ValueError:
            raise QuarantineError(f"{name} is not in the quarantine folder {root}; pass a quarantined file's "
                                  "name or SOURCE/NAME (etfuse quarantine list)") from None
        parts = inside.parts
    else:
        parts = given.parts
    if not parts or len(parts) > 2 or any(part in ("..", ".") for part in parts) or parts[-1].endswith(_REASON):
        raise QuarantineError(f"{name!r} does not name a quarantined file; pass NAME or SOURCE/NAME "
                              "as `etfuse quarantine list` shows them")
    wanted = parts[-1]                     # looked up literally: no glob, so '*' or '[' match nothing
    folders = [root / parts[0]] if len(parts) == 2 else sorted(p for p in root.glob("*") if p.is_dir())
    matches = [folder / wanted for folder in folders if (folder / wanted).is_file()]
    if not matches:
        known = [f"{q['source']}/{q['file']}" for q in quarantined(settings)]
        raise QuarantineError(f"no quarantined file named {name!r}; quarantined: {known or 'none'}")
    if len(matches) > 1:
        raise QuarantineError(f"{wanted!r} is quarantined for several sources ({[m.parent.name for m in matches]}); "
                              "pass SOURCE/NAME")
    data = matches[0]
    source = data.parent.name
    reason = data.with_name(data.name + _REASON)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    if reason.exists():
        _move(reason, root / source / "released" / f"{data.name}.{stamp}.reason.json")
    dest = settings.folder("landing") / source / data.name
    if dest.exists():
        raise QuarantineError(f"{dest} already exists in landing; ingest or remove it first")
    _move(data, dest)
    return LandingFile(source, dest)
