"""Who may call what, and how often: the token of non-public routes and a per-client rate limit.

Public: the explorer, ``/days``, ``/timeseries``, ``/area``, maps, ``/stac`` and subsets up to
``distribution.public_subset_cells``.  Non-public: ``/metrics`` (unless
``distribution.metrics_public``) and larger subsets.  The token is ``serving.admin_token``, sent as
``Authorization: Bearer <token>`` or ``X-Etfuse-Token: <token>``; with no token configured the
non-public routes are refused (403), never opened.
"""

from __future__ import annotations

import hmac
import math
import threading
import time

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from etfuse.settings import Settings

#: paths never rate-limited: probes and the scraper must get through while users are throttled
UNLIMITED_PATHS = ("/health", "/ready", "/metrics")


def presented_token(request: Request) -> str | None:
    """The token a request carries (Bearer header first), or None."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-etfuse-token")


def check_token(settings: Settings, request: Request, what: str) -> None:
    """Raise 403 when no token is configured, 401 when the request's token is missing or wrong."""
    expected = settings.serving.admin_token
    if not expected:
        raise HTTPException(403, f"{what} needs the API token, and none is configured "
                                 "(set serving.admin_token, e.g. ETFUSE_SERVING__ADMIN_TOKEN)")
    given = presented_token(request)
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, f"{what} needs the API token: send 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": 'Bearer realm="etfuse"'})


class RateLimit:
    """Pure ASGI middleware: at most ``per_minute`` requests per client address (token bucket).

    The bucket holds ``per_minute`` requests and refills continuously, so a client may burst a
    minute's worth and then keeps one request per ``60 / per_minute`` s.  Refused requests get 429
    with ``Retry-After`` [s].  Buckets of clients idle for a minute are dropped.
    """

    def __init__(self, app, per_minute: int) -> None:
        self.app, self.per_minute = app, per_minute
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._last_sweep = time.monotonic()

    def _take(self, client: str) -> float:
        """0 when the request may pass, else the seconds until it would."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_sweep > 60:
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
                self._last_sweep = now
            tokens, last = self._buckets.get(client, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                return 0.0
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.rate

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self.per_minute > 0 and scope["path"] not in UNLIMITED_PATHS:
            client = (scope.get("client") or ("unknown", 0))[0]
            wait = self._take(client)
            if wait > 0:
                response = JSONResponse(status_code=429, headers={"Retry-After": str(math.ceil(wait))}, content={
                    "detail": f"more than {self.per_minute} requests per minute from {client}; "
                              f"retry in {math.ceil(wait)} s"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
