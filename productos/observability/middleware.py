"""Request context and the access log, as one pure ASGI middleware (no per-request allocation of tasks)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from productos.observability.logging import request_id_var

access_logger = logging.getLogger("productos.access")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:;=/+-]{1,200}$")


def _request_id(scope: Scope) -> str:
    """X-Request-ID if the client sent a sane one, else the ALB's X-Amzn-Trace-Id, else a new UUID."""
    amzn: str | None = None
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SAFE_ID.match(candidate):
                return candidate
        elif name == b"x-amzn-trace-id":
            amzn = value.decode("latin-1")
    if amzn and _SAFE_ID.match(amzn):
        return amzn
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The matched route's template (``/productos/{producto_id}``), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestContextMiddleware:
    """Sets the request id (returned as ``X-Request-ID``), times the request and logs one access line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = request_id_var.set(request_id)
        header = (b"x-request-id", request_id.encode("latin-1"))
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration_ms = (time.perf_counter() - start) * 1000
            client = scope.get("client")
            access_logger.info(
                "%s %s %d",
                scope["method"],
                route_template(scope),
                status,
                extra={
                    "method": scope["method"],
                    "route": route_template(scope),
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(duration_ms, 3),
                    "client_ip": client[0] if client else None,
                },
            )
            request_id_var.reset(token)
