"""A bound on the requests one worker serves at once, answered 503 with ``Retry-After`` when it is reached.

uvicorn's own ``limit_concurrency`` is not used: it counts open connections, idle keep-alive ones included (an
ALB keeps many of those), and answers in plain text. This middleware counts requests the app is serving and
answers like every other productos error, ``{"detail": ...}``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from productos.http.json import dump_json

__all__ = ["ConcurrencyBound", "ConcurrencyLimitMiddleware"]

logger = logging.getLogger(__name__)

#: Never refused: a worker that sheds load is still alive and ready, and the balancer must keep seeing so.
HEALTH_PATHS = ("/health", "/health/", "/health/live", "/health/live/")
#: Seconds a refused client is asked to wait.
RETRY_AFTER = 1


class ConcurrencyBound:
    """The requests this process serves at once, and those refused for going over a bound (one event loop per
    process: no lock needed)."""

    def __init__(self) -> None:
        #: Requests being served now.
        self.active = 0
        #: Requests refused so far.
        self.refused = 0

    def admit(self, limit: int) -> bool:
        """Count one more request being served, unless ``limit`` are already: then count (and now and then log)
        a refusal, and return False. An admitted request's end is ``active -= 1``."""
        if self.active >= limit:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                logger.warning("%d requests refused: more than %d at once in this worker", self.refused, limit)
            return False
        self.active += 1
        return True


class ConcurrencyLimitMiddleware(ConcurrencyBound):
    """Serve at most ``max_concurrent_requests`` requests at once in this process; refuse the others with 503,
    ``{"detail": "server busy"}`` and ``Retry-After``, before they reach the app. 0 means no bound.

    Health probes are always served. The bound comes from the lifespan state (:attr:`STATE_KEY`), where
    ``create_service`` puts ``PRODUCTOS_MAX_CONCURRENT_REQUESTS`` once the settings are loaded
    (``create_service`` itself bounds requests in ``productos.http.middleware.EdgeMiddleware``, with the same
    :class:`ConcurrencyBound`).
    """

    #: Key of the bound in the lifespan state.
    STATE_KEY = "max_concurrent_requests"
    #: Seconds a refused client is asked to wait.
    RETRY_AFTER = RETRY_AFTER

    def __init__(
        self, app: ASGIApp, max_concurrent_requests: int = 0, exempt_paths: Iterable[str] = HEALTH_PATHS
    ) -> None:
        super().__init__()
        self.app = app
        self.default_limit = max_concurrent_requests
        self.exempt_paths = frozenset(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit: int = scope.get("state", {}).get(self.STATE_KEY, self.default_limit)
        if not limit or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        if not self.admit(limit):
            await send_busy(send, self.RETRY_AFTER)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


async def send_busy(send: Send, retry_after: int = RETRY_AFTER) -> None:
    """Answer 503 ``{"detail": "server busy"}`` with ``Retry-After``."""
    body = dump_json({"detail": "server busy"})
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
