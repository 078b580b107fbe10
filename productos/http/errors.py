"""The one place where errors become HTTP responses. Bodies never carry hosts, URLs or credentials.

Domain errors are mapped by FastAPI's exception handlers (``install_error_handlers``). Anything else is a bug: it
becomes the contract's 500 in ``UnhandledErrorMiddleware``, inside the request's context, so that the response
carries ``X-Request-ID`` and the log line and span say which request failed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry.trace import get_current_span
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from productos.domain.errors import (
    ConcurrentUpdateError,
    ConflictError,
    DatabaseUnavailableError,
    DomainValidationError,
    NotFoundError,
    StaleVersionError,
)
from productos.observability.middleware import ERROR_TYPE_KEY

__all__ = [
    "ERROR_STATUSES",
    "SERVICE_ERROR_STATUSES",
    "ErrorBody",
    "UnhandledErrorMiddleware",
    "error_responses",
    "install_error_handlers",
    "validation_detail",
]

logger = logging.getLogger(__name__)

#: Seconds a client (or the ALB) should wait before retrying a 503.
RETRY_AFTER_SECONDS = 1


class ErrorBody(BaseModel):
    """The body of every error a productos service answers, 422 aside (FastAPI's list of ``{loc, msg, type}``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": "Producto 7 no encontrado"}]})

    detail: str = Field(description="What went wrong, for a person; never hosts, URLs or credentials.")


_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "minimum": 0}}
}

#: Each error status a productos service can answer with :class:`ErrorBody`, and when.
ERROR_STATUSES: dict[int, str] = {
    400: "Malformed request: an invalid Content-Length (a request the HTTP parser cannot read at all gets the "
    "server's plain-text 400)",
    404: "Not found",
    408: "The request head did not arrive within PRODUCTOS_HEADER_TIMEOUT; the connection closes",
    409: "Conflict: the change conflicts with stored data or with the resource's state, or a lock held by another "
    "transaction (a row being changed, a migration) outlasted DB_LOCK_TIMEOUT (then with Retry-After)",
    412: "If-Match does not match the current version: nothing was written",
    413: "Request body larger than PRODUCTOS_MAX_BODY_SIZE",
    431: "Request head larger than PRODUCTOS_MAX_HEADER_SIZE, or more header fields than PRODUCTOS_MAX_HEADER_COUNT; "
    "the connection closes",
    500: 'Unexpected error: {"detail": "internal server error"}, with the request\'s X-Request-ID',
    503: 'Database unavailable, or more requests in flight than PRODUCTOS_MAX_CONCURRENT_REQUESTS ("server busy"): '
    "retry after Retry-After",
}

#: What ``create_service`` declares on every operation: the edge answers these whatever the route.
SERVICE_ERROR_STATUSES = (400, 408, 413, 431, 500, 503)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of error responses with :class:`ErrorBody`, for a route's ``responses=``.

    ``create_service`` declares :data:`SERVICE_ERROR_STATUSES` on every operation; a route adds what its own
    logic answers, such as ``responses=error_responses(404, 409)``.

    Args:
        statuses: keys of :data:`ERROR_STATUSES`.

    Raises:
        ValueError: a status is not one of :data:`ERROR_STATUSES`.
    """
    unknown = sorted(set(statuses) - ERROR_STATUSES.keys())
    if unknown:
        raise ValueError(f"no error response is defined for {unknown}: choose among {sorted(ERROR_STATUSES)}")
    declared: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        declared[status] = {"model": ErrorBody, "description": ERROR_STATUSES[status]}
        if status in (409, 503):
            declared[status]["headers"] = _RETRY_AFTER
    return declared


def validation_detail(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's ``{loc, msg, type}`` list without ``input`` and ``ctx``.

    FastAPI's default handler echoes the input: a huge body comes back whole, and a NaN or Infinity makes
    the 422 itself fail to serialise (a 500). Only the location, message and type are kept.
    """
    return [
        {
            "loc": [part if isinstance(part, int | str) else str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", ""))[:500],
            "type": str(error.get("type", "value_error")),
        }
        for error in errors
    ]


def _json(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _json(422, validation_detail(exc.errors()))


async def _domain_validation(_: Request, exc: Exception) -> JSONResponse:
    return _json(422, [{"loc": ["body"], "msg": str(exc), "type": "value_error"}])


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return _json(404, str(exc))


async def _stale_version(_: Request, exc: Exception) -> JSONResponse:
    return _json(412, str(exc))


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    return _json(409, str(exc))


async def _concurrent_update(_: Request, exc: Exception) -> JSONResponse:
    # A row held by another transaction past DB_LOCK_TIMEOUT, a deadlock: contention on this resource, not an
    # outage (the ALB's and the alarms' 5xx stay about the service), and a retry may well succeed.
    return _json(409, str(exc), {"Retry-After": str(RETRY_AFTER_SECONDS)})


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    reason = getattr(exc, "reason", "") or type(exc.__cause__ or exc).__name__
    logger.warning("database unavailable: %s", reason, extra={"reason": reason})
    return _json(503, "database unavailable", {"Retry-After": str(RETRY_AFTER_SECONDS)})


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    return _json(exc.status_code, exc.detail, headers)


#: The methods a 405's ``Allow`` header may name.
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method a route serves at the request's path, for the ``Allow`` header a 405 must carry.

    Starlette's 405 names only the methods of the first route that matched the path, while a FastAPI service
    registers one route per method: ``OPTIONS /productos`` answered ``Allow: GET``, without POST. Each method is
    asked of the app's router as a request would (rare, and only on a 405).
    """
    routes = request.app.router.routes
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in routes):
            allowed.append(method)
    return ", ".join(allowed)


_INTERNAL_ERROR = b'{"detail":"internal server error"}'


def _log_unhandled(exc: Exception) -> None:
    """Log ``exc`` once, with its traceback, and record it on the current span (an exception event and
    ``error.type``, OpenTelemetry's attribute for what failed)."""
    error_type = type(exc).__qualname__
    span = get_current_span()
    if span.is_recording():
        span.record_exception(exc)
        span.set_attribute("error.type", error_type)
    logger.error("unhandled error", exc_info=exc, extra={"error.type": error_type})


class UnhandledErrorMiddleware:
    """Turns an exception no handler took into ``500 {"detail": "internal server error"}``, inside the request.

    Starlette's own catch-all (``ServerErrorMiddleware``) is the outermost layer, outside
    ``RequestContextMiddleware``: its 500 had no ``X-Request-ID``, its log line no ``request_id`` or
    ``trace_id``, and it re-raised to the server, which logged the error a second time and closed the
    client's keep-alive connection. Installed just inside ``RequestContextMiddleware``, this one logs the error
    once with its request and trace ids, records it on the request's span, and answers the 500 like any other
    response: with ``X-Request-ID``, counted by route, on a connection that stays open. An error after the
    response has begun is logged the same way; the server then closes the connection, as the response cannot
    be completed. ``create_service`` does the same in its one edge layer (``productos.http.middleware.EdgeMiddleware``,
    through :func:`answer_unhandled`).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        noting = SendNotingStart(send)
        try:
            await self.app(scope, receive, noting)
        except Exception as exc:
            await answer_unhandled(scope, send, exc, started=noting.started)


class SendNotingStart:
    """``send``, noting whether the response has started: once it has, an error can no longer be answered."""

    __slots__ = ("send", "started")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


async def answer_unhandled(scope: Scope, send: Send, exc: Exception, *, started: bool) -> None:
    """What ``UnhandledErrorMiddleware`` (and ``create_service``'s edge) does with an exception no handler took:
    name it as the request's ``error.type``, log it, and answer the 500 unless the response had ``started``."""
    scope[ERROR_TYPE_KEY] = type(exc).__qualname__  # the request's error.type (metric, span, access line)
    _log_unhandled(exc)
    if started:
        return
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_INTERNAL_ERROR)).encode("latin-1")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _INTERNAL_ERROR})


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # The last resort, for an error in the middleware outside UnhandledErrorMiddleware (or an app built
    # without it): outside the request's context, and Starlette re-raises it to the server.
    _log_unhandled(exc)
    return _json(500, "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Map the domain errors (and FastAPI's validation errors) to their responses; ``create_service`` also
    installs ``UnhandledErrorMiddleware`` for the rest."""
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(DomainValidationError, _domain_validation)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(StaleVersionError, _stale_version)
    app.add_exception_handler(ConcurrentUpdateError, _concurrent_update)
    app.add_exception_handler(ConflictError, _conflict)
    app.add_exception_handler(DatabaseUnavailableError, _unavailable)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected)
