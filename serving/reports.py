"""``GET /reports/...``: the validation reports under ``$ETFUSE_HOME/reports``, read-only, over HTTP.

Alert links point here (``alerts.reports_base_url``), so a report opens from a chat or a phone
instead of being a ``file://`` path inside a container.  Only regular files inside the reports
folder are served: ``..``, absolute paths, encoded separators and symbolic links leading out of the
folder are refused (404, the same answer as for a missing file, so nothing outside is revealed).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from etfuse.settings import Settings

_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json", ".jsonl": "application/x-ndjson",
          ".png": "image/png", ".css": "text/css", ".svg": "image/svg+xml"}


def resolve_report(root: Path, relative: str) -> Path | None:
    """The file ``relative`` names inside ``root``, or None when it is not a regular file inside it."""
    if not relative or "\x00" in relative or "\\" in relative:
        return None
    parts = [p for p in relative.split("/") if p]
    if any(p in (".", "..") for p in parts) or relative.startswith("/"):
        return None
    try:
        base = root.resolve(strict=True)
        target = base.joinpath(*parts).resolve(strict=True)      # follows links, then checks where they led
        target.relative_to(base)
    except (OSError, ValueError, RuntimeError):
        return None
    return target if target.is_file() else None


def reports_router(settings: Settings) -> APIRouter:
    router = APIRouter()
    root = Path(settings.folder("reports"))

    @router.get("/reports/{path:path}", summary="A validation report (read-only)", include_in_schema=True)
    def report(path: str) -> FileResponse:
        target = resolve_report(root, path or "index.html") if path else resolve_report(root, "index.html")
        if target is None:
            raise HTTPException(404, f"no report {path!r}")
        return FileResponse(target, media_type=_TYPES.get(target.suffix.lower(), "application/octet-stream"),
                            headers={"X-Content-Type-Options": "nosniff",
                                     "Content-Security-Policy": "default-src 'self' 'unsafe-inline'"})

    return router
