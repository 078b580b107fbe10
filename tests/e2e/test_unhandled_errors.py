"""Every 500 is traceable: an error no handler takes is answered ``{"detail": "internal server error"}`` with the
request's ``X-Request-ID``, logged once with its traceback, request id and trace id, recorded on the request's
span (the exception and ``error.type``), and counted by route; the client's keep-alive connection stays open.

A service built with ``create_service`` whose routes fail, as any service's bug would.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI
from fastapi.responses import StreamingResponse
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import Receive, Scope, Send

from productos import Settings, create_service
from productos.observability.metrics import Metrics
from productos.observability.telemetry import Telemetry
from productos.observability.tracing import Tracing
from tests.integration.tcp_proxy import free_port
from tests.log_lines import JsonLines

DURATION_COUNT = "http_server_request_duration_seconds_count"
INTERNAL_ERROR = {"detail": "internal server error"}

router = APIRouter()


@router.get("/boom/{n}")
async def boom(n: int) -> None:
    raise RuntimeError(f"boom {n}")


@router.get("/late")
async def late() -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        yield b"["
        raise RuntimeError("late")

    return StreamingResponse(body(), media_type="application/json")


def make_app(database_url: str) -> FastAPI:
    return create_service(title="errores", routers=[router], settings=Settings(database_url=database_url))


class Lines(JsonLines):
    """The JSON lines the service writes, with its errors apart."""

    def errors(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["level"] == "error"]

    def attach(self) -> None:
        """On the root logger, once the app has started (its logging configuration replaces root's handlers)."""
        logging.getLogger().addHandler(self)


@pytest.fixture
def lines() -> Iterator[Lines]:
    collector = Lines()
    try:
        yield collector
    finally:
        logging.getLogger().removeHandler(collector)


async def test_a_500_carries_the_request_id_and_is_logged_traced_and_counted_once(
    sqlite_url: str, lines: Lines
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    metrics = Metrics()
    telemetry = Telemetry(metrics=metrics, tracing=Tracing(provider, TraceContextTextMapPropagator()))
    app = make_app(sqlite_url)

    async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["state"][Telemetry.STATE_KEY] = telemetry  # what the lifespan's telemetry would be
        await app(scope, receive, send)

    async with LifespanManager(recorded) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            lines.attach()
            sent = await client.get("/boom/1", headers={"X-Request-ID": "req-abc-123"})
            generated = await client.get("/boom/2")
            assert (await client.get("/")).status_code == 200

    for response in (sent, generated):
        assert response.status_code == 500
        assert response.json() == INTERNAL_ERROR
    assert sent.headers["x-request-id"] == "req-abc-123"
    assert len(generated.headers["x-request-id"]) == 32

    errors = lines.errors()
    assert [line["message"] for line in errors] == ["unhandled error", "unhandled error"]  # once each
    spans = {span.attributes["url.path"]: span for span in exporter.get_finished_spans() if span.attributes}
    for line, response, n in zip(errors, (sent, generated), (1, 2), strict=True):
        span = spans[f"/boom/{n}"]
        assert line["request_id"] == response.headers["x-request-id"]
        assert line["trace_id"] == format(span.context.trace_id, "032x")
        assert line["error.type"] == "RuntimeError"
        assert "Traceback (most recent call last)" in line["exception"]
        assert f"RuntimeError: boom {n}" in line["exception"]

        assert span.kind is SpanKind.SERVER and span.name == "GET /boom/{n}"
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None and span.attributes["error.type"] == "RuntimeError"
        assert span.attributes["http.response.status_code"] == 500
        [event] = [event for event in span.events if event.name == "exception"]
        assert event.attributes is not None
        assert (event.attributes["exception.type"], event.attributes["exception.message"]) == (
            "RuntimeError",
            f"boom {n}",
        )

    # error.type is the exception's class on the metric and the access line too, as on the span.
    labels = {
        "http_request_method": "GET",
        "http_route": "/boom/{n}",
        "http_response_status_code": "500",
        "url_scheme": "http",
        "error_type": "RuntimeError",
    }
    assert metrics.registry.get_sample_value(DURATION_COUNT, labels) == 2
    access = [line for line in lines.lines if line["logger"] == "productos.access"]
    assert [(line["url.path"], line["error.type"]) for line in access[:2]] == [
        ("/boom/1", "RuntimeError"),
        ("/boom/2", "RuntimeError"),
    ]
    assert "error.type" not in access[2]  # GET /: 200


async def http_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on an open connection; its status, headers and body."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\nX-Request-ID: keep-{path.strip('/')}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    return int(status_line.split()[1]), headers, body


async def test_the_client_keeps_its_connection_after_a_500(sqlite_url: str, lines: Lines) -> None:
    """uvicorn closes the connection after an error that reaches it; a 500 answered by the app does not."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(sqlite_url), host="127.0.0.1", port=port, log_config=None))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), serving.exception()
            await asyncio.sleep(0.01)
        lines.attach()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for path, expected in [("/boom/1", 500), ("/", 200), ("/boom/2", 500), ("/health/live", 200)]:
                status, headers, body = await http_exchange(reader, writer, path)
                assert status == expected, body
                assert headers.get("connection", "").lower() != "close"
                assert headers["x-request-id"] == f"keep-{path.strip('/')}"
                if status == 500:
                    assert json.loads(body) == INTERNAL_ERROR
        finally:
            writer.close()
        # An error once the response has begun cannot become a 500: logged the same way, then the connection
        # closes, as the response cannot be completed.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/late")
    finally:
        server.should_exit = True
        await serving
    messages = [line["message"] for line in lines.errors()]
    assert messages.count("unhandled error") == 3
    assert not [m for m in messages if m.startswith("Exception in ASGI application")]
