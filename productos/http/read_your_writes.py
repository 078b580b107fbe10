"""One read-your-writes scope per HTTP request (``productos.infra.db.replica``).

Once a unit of work of the request has written, the request's later read-only units read from the primary,
not from the read replica; the next request starts afresh. The scope is a context variable set for the
request's whole run, so units in tasks the request starts share it, and nothing one request wrote sends
another's reads to the primary, whatever server runs them (requests served one after the other in the same task,
as ``httpx.ASGITransport`` does, included).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from productos.infra.db.replica import read_your_writes

__all__ = ["ReadYourWritesMiddleware"]


class ReadYourWritesMiddleware:
    """Opens a read-your-writes scope around each HTTP request when the service reads from a replica: the lifespan
    state says so under ``STATE_KEY`` (no scope is needed without one). ``create_service`` does the same in its
    one edge layer (``productos.http.middleware.EdgeMiddleware``)."""

    #: Key, in the lifespan state, of whether the service has a read replica.
    STATE_KEY = "read_replica"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state")
        if scope["type"] != "http" or not (state and state.get(self.STATE_KEY)):
            await self.app(scope, receive, send)
            return
        with read_your_writes():
            await self.app(scope, receive, send)
