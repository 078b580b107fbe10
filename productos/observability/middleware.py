"""Request context, metrics, the request's span and the access log: one pure ASGI middleware.

Each request is timed once. That one measurement is the duration in the access line, the
``http.server.request.duration`` observation (Prometheus and OpenTelemetry) and the span's end. The
measurement ends when the response's last body message has been handed to the server; the metric and the log
line are written right after, so the client never waits for them.

The span, the metric and the access line name the request's fields alike, with OpenTelemetry's semantic
conventions: ``http.request.method``, ``http.route``, ``url.path``, ``url.scheme``,
``http.response.status_code``, ``client.address`` and, for a failed request only, ``error.type``: the class
name of the exception that escaped the route (see ``ERROR_TYPE_KEY``), else the status code of a 5xx
(``"503"``). The access line adds ``duration_ms``, the same measurement in milliseconds. The client's address
and the scheme are the ASGI scope's, read when the request is done: behind trusted proxies
(``PRODUCTOS_TRUSTED_PROXIES``), ``EdgeMiddleware`` just inside this one (or uvicorn's proxy-headers handling, in
front of the app) has put the ones of ``X-Forwarded-For`` and ``X-Forwarded-Proto`` there by then.
"""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import Status, StatusCode, set_span_in_context
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from productos.observability.logging import log_access, request_id_var
from productos.observability.metrics import KNOWN_METHODS
from productos.observability.telemetry import Telemetry
from productos.observability.tracing import TRACE_HEADERS

# The access log is a channel of its own, named in the docs and filtered on by operators, not a module logger.
access_logger = logging.getLogger("productos.access")

#: Scope key under which the error handling inside this middleware leaves the class name of an exception it
#: answered with a 500 (``productos.http.errors.UnhandledErrorMiddleware``): the request's ``error.type``.
ERROR_TYPE_KEY = "productos.error_type"

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:;=/+-]{1,200}$")
_NO_TELEMETRY = Telemetry()
_TRACE_HEADERS = frozenset(name.encode("latin-1") for name in TRACE_HEADERS)


def _request_id(request_id: str | None, amzn: str | None) -> str:
    """X-Request-ID if the client sent a sane one, else the ALB's X-Amzn-Trace-Id, else 128 random bits in hex.

    The bits come from ``random``, not ``uuid4``'s ``os.urandom`` (a system call, 13 µs of a 450 µs request):
    an id must be unique, not unpredictable, and ``random`` reseeds itself in each forked worker.
    """
    if request_id and _SAFE_ID.match(request_id):
        return request_id
    if amzn and _SAFE_ID.match(amzn):
        return amzn
    return f"{random.getrandbits(128):032x}"


def route_template(scope: Scope) -> str:
    """The matched route's template (``/productos/{producto_id}``), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestContextMiddleware:
    """Sets the request id (returned as ``X-Request-ID``), opens the request's span, times the request,
    records its metrics and logs one access line.

    The telemetry (metrics, tracing, the access log's switch) comes from the lifespan state, under
    ``Telemetry.STATE_KEY``: settings are only known once the app starts. Without it, the middleware still
    sets the request id and logs.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.get("state")
        telemetry: Telemetry = (state.get(Telemetry.STATE_KEY) if state else None) or _NO_TELEMETRY
        metrics = telemetry.metrics
        tracing = telemetry.tracing

        x_request_id = amzn_trace_id = None
        carrier: dict[str, str] | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                x_request_id = value.decode("latin-1")
            elif name in _TRACE_HEADERS:
                if name == b"x-amzn-trace-id":
                    amzn_trace_id = value.decode("latin-1")
                if tracing is not None:
                    carrier = carrier or {}
                    carrier[name.decode("latin-1")] = value.decode("latin-1")

        request_id = _request_id(x_request_id, amzn_trace_id)
        token = request_id_var.set(request_id)
        header = (b"x-request-id", request_id.encode("latin-1"))
        method = scope["method"]
        if method not in KNOWN_METHODS:
            method = "_OTHER"

        start = time.perf_counter_ns()
        span: Any = None
        context_token = None
        if tracing is not None:
            parent = tracing.extract(carrier) if carrier else None
            span = tracing.start_request_span(method, parent, method)
            context_token = otel_context.attach(set_span_in_context(span, parent))
        if metrics is not None:
            metrics.request_started()
        status = 500
        done = False
        raised: str | None = None

        def finish() -> None:
            nonlocal done
            done = True
            elapsed_ns = time.perf_counter_ns() - start
            route = route_template(scope)
            scheme = scope.get("scheme", "http")
            error_type = scope.get(ERROR_TYPE_KEY) or raised or (str(status) if status >= 500 else None)
            if metrics is not None:
                metrics.request_finished(method, route, status, elapsed_ns / 1e9, scheme, error_type)
            client = scope.get("client")
            address = client[0] if client else None
            if span is not None and span.is_recording():
                span.update_name(f"{method} {route}")
                span.set_attributes(
                    {
                        "http.route": route,
                        "http.response.status_code": status,
                        "url.path": scope["path"],
                        "url.scheme": scheme,
                    }
                )
                if address is not None:
                    span.set_attribute("client.address", address)
                if error_type is not None:
                    span.set_attribute("error.type", error_type)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                # The span keeps its wall-clock start; its length is the one measurement above.
                span.end(end_time=span.start_time + elapsed_ns)
            if telemetry.access_log:
                fields = {
                    "http.request.method": method,
                    "http.route": route,
                    "url.path": scope["path"],
                    "url.scheme": scheme,
                    "http.response.status_code": status,
                    "client.address": address,
                    "duration_ms": round(elapsed_ns / 1e6, 3),
                }
                if error_type is not None:
                    fields["error.type"] = error_type
                span_context = span.get_span_context() if span is not None else None
                log_access(access_logger, f"{method} {route} {status}", fields, span_context)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            elif message["type"] == "http.response.body" and not message.get("more_body", False) and not done:
                await send(message)
                finish()
                return
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException as exc:
            # Nothing inside answered it (an app without UnhandledErrorMiddleware, a cancelled request).
            raised = type(exc).__qualname__
            raise
        finally:
            if not done:
                finish()
            if context_token is not None:
                otel_context.detach(context_token)
            request_id_var.reset(token)
