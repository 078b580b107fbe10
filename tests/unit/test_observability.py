"""Observability in process: the request middleware, metrics, spans, log lines and trusted proxies' headers."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from productos.http.middleware import TrustedProxyHeadersMiddleware
from productos.observability.db import operation_name
from productos.observability.logging import JsonFormatter, logging_config, set_xray_trace_ids
from productos.observability.metrics import Metrics
from productos.observability.middleware import RequestContextMiddleware
from productos.observability.telemetry import Telemetry, build_telemetry, exporter_kind
from productos.observability.tracing import Tracing, create_tracing
from productos.settings import Settings
from tests.log_lines import JsonLines

ROUTE = "/items/{item_id}"
DURATION = "http_server_request_duration_seconds"


def http_labels(status: int, error_type: str = "", scheme: str = "http") -> dict[str, str]:
    """The Prometheus labels of a GET on ``ROUTE``: the semantic conventions' attributes, spelt with underscores."""
    return {
        "http_request_method": "GET",
        "http_route": ROUTE,
        "http_response_status_code": str(status),
        "url_scheme": scheme,
        "error_type": error_type,
    }


@pytest.fixture
def access_lines() -> Iterator[list[dict[str, Any]]]:
    collector = JsonLines()
    logger = logging.getLogger("productos.access")
    previous = logger.level
    logger.addHandler(collector)
    logger.setLevel(logging.INFO)
    try:
        yield collector.lines
    finally:
        logger.removeHandler(collector)
        logger.setLevel(previous)


def in_memory_tracing() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider, TraceContextTextMapPropagator()), exporter


def app_with(telemetry: Telemetry) -> httpx.AsyncClient:
    """A tiny app behind the middleware, with ``telemetry`` in the lifespan state as the real app has it."""

    async def item(request: Request) -> PlainTextResponse:
        item_id = int(request.path_params["item_id"])
        if item_id == 0:
            raise RuntimeError("boom")
        return PlainTextResponse("ok", status_code=200 if item_id % 2 else 404)

    middleware = RequestContextMiddleware(Starlette(routes=[Route(ROUTE, item)]))

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"] = {Telemetry.STATE_KEY: telemetry}
        await middleware(scope, receive, send)

    transport = httpx.ASGITransport(app=with_state, raise_app_exceptions=False, client=("10.1.2.3", 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_one_label_per_route_template_and_one_measurement_per_request(
    access_lines: list[dict[str, Any]],
) -> None:
    tracing, exporter = in_memory_tracing()
    metrics = Metrics()
    async with app_with(Telemetry(metrics=metrics, tracing=tracing)) as client:
        for item_id in range(1, 1001):
            await client.get(f"/items/{item_id}")

    registry = metrics.registry
    routes = {s.labels["http_route"] for m in registry.collect() if m.name == DURATION for s in m.samples}
    assert routes == {ROUTE}
    for status in (200, 404):
        assert registry.get_sample_value(f"{DURATION}_count", http_labels(status)) == 500
    assert registry.get_sample_value("http_server_active_requests") == 0

    spans = exporter.get_finished_spans()
    assert len(spans) == 1000 and {s.name for s in spans} == {f"GET {ROUTE}"}
    assert all(s.kind is SpanKind.SERVER and (s.attributes or {}).get("http.route") == ROUTE for s in spans)
    # One measurement: the spans' lengths are the histogram's observations, and the access lines' durations.
    span_seconds = sum((s.end_time - s.start_time) for s in spans if s.end_time and s.start_time) / 1e9
    histogram_seconds = sum(registry.get_sample_value(f"{DURATION}_sum", http_labels(s)) or 0 for s in (200, 404))
    assert span_seconds == pytest.approx(histogram_seconds, abs=1e-6)
    assert len(access_lines) == 1000
    assert sum(float(line["duration_ms"]) for line in access_lines) / 1e3 == pytest.approx(histogram_seconds, abs=1e-3)
    assert {line["trace_id"] for line in access_lines} == {format(s.context.trace_id, "032x") for s in spans}


async def test_the_access_line_can_be_turned_off_alone(access_lines: list[dict[str, Any]]) -> None:
    metrics = Metrics()
    async with app_with(Telemetry(metrics=metrics, access_log=False)) as client:
        response = await client.get("/items/7")
    assert response.status_code == 200 and response.headers["x-request-id"]
    assert access_lines == []
    counted = metrics.registry.get_sample_value("http_server_request_duration_seconds_count", http_labels(200))
    assert counted == 1  # the request is still measured
    assert not build_telemetry(Settings(access_log=False)).access_log
    assert build_telemetry(Settings()).access_log


async def test_access_line_carries_request_and_trace_ids(access_lines: list[dict[str, Any]]) -> None:
    tracing, exporter = in_memory_tracing()
    incoming_trace = "4bf92f3577b34a4a8e6d2b5a8b2e9a41"
    async with app_with(Telemetry(metrics=Metrics(), tracing=tracing)) as client:
        response = await client.get(
            "/items/7",
            headers={"X-Request-ID": "req-42", "traceparent": f"00-{incoming_trace}-00f067aa0ba902b7-01"},
        )
    assert response.headers["x-request-id"] == "req-42"
    (line,) = access_lines
    (span,) = exporter.get_finished_spans()
    assert line["request_id"] == "req-42"
    assert line["trace_id"] == incoming_trace == format(span.context.trace_id, "032x")
    assert line["span_id"] == format(span.context.span_id, "016x")
    assert span.parent is not None and span.parent.span_id == 0x00F067AA0BA902B7
    # The access line and the span name the request's fields alike, with the semantic conventions' names.
    fields = {
        "http.request.method": "GET",
        "http.route": ROUTE,
        "url.path": "/items/7",
        "url.scheme": "http",
        "http.response.status_code": 200,
        "client.address": "10.1.2.3",
    }
    assert {key: line[key] for key in fields} == fields
    assert {key: (span.attributes or {})[key] for key in fields} == fields
    assert "error.type" not in line and "error.type" not in (span.attributes or {})
    assert isinstance(line["duration_ms"], float)
    assert not {"method", "route", "path", "status", "client_ip"} & line.keys()  # the old names are gone


async def test_unhandled_error_is_counted_once_as_500(access_lines: list[dict[str, Any]]) -> None:
    tracing, exporter = in_memory_tracing()
    metrics = Metrics()
    async with app_with(Telemetry(metrics=metrics, tracing=tracing)) as client:
        assert (await client.get("/items/0")).status_code == 500
    # Starlette's ServerErrorMiddleware answered the 500 before the exception reached the middleware: the status
    # code was sent, so error.type is the status code (with UnhandledErrorMiddleware, create_service's, it is
    # the exception's class: tests/e2e/test_unhandled_errors.py).
    assert metrics.registry.get_sample_value(f"{DURATION}_count", http_labels(500, "500")) == 1
    assert [(line["http.response.status_code"], line["error.type"]) for line in access_lines] == [(500, "500")]
    (span,) = exporter.get_finished_spans()
    assert not span.status.is_ok and (span.attributes or {})["error.type"] == "500"


async def test_an_exception_before_any_response_has_its_class_as_error_type(
    access_lines: list[dict[str, Any]],
) -> None:
    tracing, exporter = in_memory_tracing()
    metrics = Metrics()
    telemetry = Telemetry(metrics=metrics, tracing=tracing)

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise LookupError("nothing answered")

    app = RequestContextMiddleware(failing)
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/anything",
        "scheme": "http",
        "headers": [],
        "client": ("10.1.2.3", 5000),
        "state": {Telemetry.STATE_KEY: telemetry},
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("nothing is sent")

    with pytest.raises(LookupError):
        await app(scope, receive, send)
    labels = {**http_labels(500, "LookupError"), "http_route": "unmatched"}
    assert metrics.registry.get_sample_value(f"{DURATION}_count", labels) == 1
    assert [line["error.type"] for line in access_lines] == ["LookupError"]
    (span,) = exporter.get_finished_spans()
    assert (span.attributes or {})["error.type"] == "LookupError" and not span.status.is_ok


async def test_a_5xx_answered_by_the_app_has_its_status_code_as_error_type(
    access_lines: list[dict[str, Any]],
) -> None:
    """OpenTelemetry's rule: with no exception, a server error's ``error.type`` is its status code; a 4xx has none."""

    async def unavailable(request: Request) -> PlainTextResponse:
        return PlainTextResponse("later", status_code=503 if request.path_params["item_id"] == "1" else 404)

    tracing, exporter = in_memory_tracing()
    metrics = Metrics()
    telemetry = Telemetry(metrics=metrics, tracing=tracing)
    app = RequestContextMiddleware(Starlette(routes=[Route(ROUTE, unavailable)]))

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"] = {Telemetry.STATE_KEY: telemetry}
        await app(scope, receive, send)

    transport = httpx.ASGITransport(app=with_state)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        assert (await client.get("/items/1")).status_code == 503
        assert (await client.get("/items/2")).status_code == 404
    assert metrics.registry.get_sample_value(f"{DURATION}_count", http_labels(503, "503", "https")) == 1
    assert metrics.registry.get_sample_value(f"{DURATION}_count", http_labels(404, "", "https")) == 1
    unavailable_line, missing_line = access_lines
    assert (unavailable_line["error.type"], unavailable_line["url.scheme"]) == ("503", "https")
    assert "error.type" not in missing_line
    unavailable_span, missing_span = exporter.get_finished_spans()
    assert (unavailable_span.attributes or {})["error.type"] == "503" and not unavailable_span.status.is_ok
    assert "error.type" not in (missing_span.attributes or {})


async def test_unknown_methods_and_paths_cannot_create_label_values() -> None:
    metrics = Metrics()
    async with app_with(Telemetry(metrics=metrics)) as client:
        for n in range(20):
            await client.request(f"BREW{n}", f"/nowhere/{n}")
    samples = [s for m in metrics.registry.collect() if m.name == DURATION for s in m.samples]
    assert {(s.labels["http_request_method"], s.labels["http_route"]) for s in samples} == {("_OTHER", "unmatched")}


async def test_without_telemetry_the_middleware_still_logs(access_lines: list[dict[str, Any]]) -> None:
    async with app_with(Telemetry()) as client:
        response = await client.get("/items/3")
    assert response.status_code == 200 and len(response.headers["x-request-id"]) == 32
    assert "trace_id" not in access_lines[0]


@pytest.mark.parametrize(
    ("trusted", "peer", "headers", "client", "scheme"),
    [
        ("", "10.0.0.5", {"X-Forwarded-For": "203.0.113.9"}, "10.0.0.5", "http"),  # nobody trusted: ignored
        ("10.0.0.0/16", "198.51.100.7", {"X-Forwarded-For": "203.0.113.9"}, "198.51.100.7", "http"),  # untrusted peer
        ("10.0.0.0/16", "10.0.0.5", {"X-Forwarded-For": "203.0.113.9"}, "203.0.113.9", "http"),  # the ALB's entry
        ("10.0.0.0/16", "10.0.0.5", {"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}, "203.0.113.9", "http"),  # forged
        ("10.0.0.0/16,10.1.0.0/16", "10.0.0.5", {"X-Forwarded-For": "203.0.113.9, 10.1.0.8"}, "203.0.113.9", "http"),
        ("10.0.0.0/16", "10.0.0.5", {"X-Forwarded-For": "10.0.3.3"}, "10.0.3.3", "http"),  # all trusted: leftmost
        ("*", "198.51.100.7", {"X-Forwarded-For": "203.0.113.9"}, "203.0.113.9", "http"),
        ("10.0.0.0/16", "10.0.0.5", {}, "10.0.0.5", "http"),
        ("::1", "::1", {"X-Forwarded-For": "2001:db8::1"}, "2001:db8::1", "http"),
        (
            "10.0.0.0/16",
            "10.0.0.5",
            {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"},
            "203.0.113.9",
            "https",
        ),
        ("10.0.0.0/16", "198.51.100.7", {"X-Forwarded-Proto": "https"}, "198.51.100.7", "http"),  # untrusted
    ],
)
async def test_client_address_and_scheme_come_from_proxy_headers_only_through_trusted_proxies(
    access_lines: list[dict[str, Any]], trusted: str, peer: str, headers: dict[str, str], client: str, scheme: str
) -> None:
    """``TrustedProxyHeadersMiddleware`` (uvicorn's proxy-headers handling, PRODUCTOS_TRUSTED_PROXIES from the
    lifespan state) in front of the request middleware, as ``create_service`` installs them."""
    tracing, exporter = in_memory_tracing()
    metrics = Metrics()
    telemetry = Telemetry(metrics=metrics, tracing=tracing)

    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{request.client.host if request.client else None} {request.url.scheme}")

    app = TrustedProxyHeadersMiddleware(RequestContextMiddleware(Starlette(routes=[Route(ROUTE, item)])))

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"] = {Telemetry.STATE_KEY: telemetry, TrustedProxyHeadersMiddleware.STATE_KEY: trusted}
        await app(scope, receive, send)

    transport = httpx.ASGITransport(app=with_state, client=(peer, 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client_:
        response = await client_.get("/items/1", headers=headers)
    assert response.text == f"{client} {scheme}"  # what the route sees
    (line,) = access_lines
    assert (line["client.address"], line["url.scheme"]) == (client, scheme)
    (span,) = exporter.get_finished_spans()
    assert ((span.attributes or {})["client.address"], (span.attributes or {})["url.scheme"]) == (client, scheme)
    assert metrics.registry.get_sample_value(f"{DURATION}_count", http_labels(200, scheme=scheme)) == 1


def test_trusted_proxies_setting_is_checked_and_normalised() -> None:
    assert Settings(trusted_proxies=" 10.0.0.7/16 ,127.0.0.1").trusted_proxies == "10.0.0.0/16,127.0.0.1"
    with pytest.raises(ValidationError, match="not an IP address"):
        Settings(trusted_proxies="10.0.0.0/16, alb.internal")


@pytest.mark.parametrize(
    ("statement", "operation"),
    [
        ("SELECT productos.id FROM productos", "SELECT"),
        ("\n  insert into productos (nombre) VALUES ($1)", "INSERT"),
        ("(SELECT 1) UNION (SELECT 2)", "SELECT"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "WITH"),
        ("update productos set stock = 1", "UPDATE"),
        ("DELETE FROM productos", "DELETE"),
        ("GRANT ALL ON productos TO someone", "OTHER"),
        ("", "OTHER"),
    ],
)
def test_operation_name(statement: str, operation: str) -> None:
    assert operation_name(statement) == operation


def test_log_lines_carry_the_current_span_and_x_ray_style_ids() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "hello", None, None)
    record.color_message = "\x1b[36mhello\x1b[0m"
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("test")
    outside = json.loads(formatter.format(record))
    assert "trace_id" not in outside and "color_message" not in outside
    with tracer.start_as_current_span("work") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        line = json.loads(formatter.format(record))
        set_xray_trace_ids(True)
        try:
            xray_line = json.loads(formatter.format(record))
        finally:
            set_xray_trace_ids(False)
    assert line["trace_id"] == trace_id and line["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "xray_trace_id" not in line
    assert xray_line["xray_trace_id"] == f"1-{trace_id[:8]}-{trace_id[8:]}"
    assert line["pid"] == record.process


def test_log_level_applies_to_productos_gunicorn_and_uvicorn() -> None:
    config = logging_config("warning")
    assert config["root"]["level"] == "WARNING"
    assert {config["loggers"][name]["level"] for name in ("gunicorn.error", "uvicorn", "uvicorn.error")} == {"WARNING"}


def test_exporter_is_otlp_when_an_endpoint_is_configured_else_none() -> None:
    assert exporter_kind(Settings()) == "none"
    assert exporter_kind(Settings(otel_exporter_otlp_endpoint="http://collector:4318")) == "otlp"
    assert exporter_kind(Settings(otel_exporter_otlp_endpoint="http://c:4318", otel_exporter="none")) == "none"


def test_tracing_without_an_exporter_makes_trace_ids_but_records_nothing() -> None:
    telemetry = build_telemetry(Settings(metrics_enabled=False))
    assert telemetry.metrics is None and telemetry.tracing is not None
    span = telemetry.tracing.tracer.start_span("GET")
    assert span.get_span_context().is_valid and not span.is_recording()
    telemetry.shutdown()


def test_everything_off() -> None:
    telemetry = build_telemetry(Settings(metrics_enabled=False, tracing_enabled=False))
    assert telemetry.metrics is None and telemetry.tracing is None


async def test_x_ray_ids_and_the_albs_trace_header(access_lines: list[dict[str, Any]]) -> None:
    tracing = create_tracing(Resource.create({}), exporter="none", endpoint=None, xray=True)
    set_xray_trace_ids(True)
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    try:
        async with app_with(Telemetry(tracing=tracing)) as client:
            await client.get("/items/1")
            await client.get("/items/1", headers={"X-Amzn-Trace-Id": header})
    finally:
        set_xray_trace_ids(False)
        tracing.shutdown()
    new, continued = access_lines
    assert abs(int(new["trace_id"][:8], 16) - time.time()) < 600  # an X-Ray id starts with the epoch second
    assert new["xray_trace_id"] == f"1-{new['trace_id'][:8]}-{new['trace_id'][8:]}"
    assert continued["trace_id"] == "5759e988bd862e3fe1be46a994272793"
    assert continued["xray_trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
    assert continued["request_id"] == header  # no X-Request-ID: the ALB's trace header is the request id


def test_batched_metrics_write_what_immediate_ones_do() -> None:
    """A worker adds up and flushes once a second: the figures are those of writing every observation."""
    immediate, batched = Metrics(), Metrics(batch=True)
    for metrics in (immediate, batched):
        pool = metrics.pool("p")
        for n in range(300):
            metrics.request_started()
            pool.pending(1)
            pool.waited(n / 1000)
            pool.pending(-1)
            pool.connections("used", 1)
            metrics.operation("postgresql", "SELECT" if n % 3 else "INSERT", n / 10_000)
            pool.connections("used", -1)
            pool.connections("idle", 1)
            pool.moved("idle", "used")  # a checkout and a checkin, as the pool's listeners report them
            pool.moved("used", "idle")
            pool.moved(None, "used" if n % 5 else None)  # opened for the caller, or not at all
            metrics.request_finished("GET", ROUTE, 200 if n % 4 else 404, n / 100)
        metrics.request_started()  # one still in flight
        pool.timed_out()
        pool.capacity(30)

    def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in metrics.registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        }

    assert samples(batched) != samples(immediate)  # nothing written yet but the capacity
    batched.flush()
    assert samples(batched) == pytest.approx(samples(immediate))
    assert batched.registry.get_sample_value("http_server_active_requests") == 1
    batched.flush()  # nothing new: nothing changes
    assert samples(batched) == pytest.approx(samples(immediate))


#: Forks two children, as gunicorn's master forks its workers, and prints the request ids the parent and each child
#: make. In a fresh interpreter: like gunicorn's master, it has no OpenTelemetry TracerProvider, whose at-fork hook
#: (opentelemetry-sdk 1.45) re-detects resources in the child through a thread pool and can hang a child forked from
#: a process that ran other tests' apps.
_FORKING_PARENT = """
import json, os, sys
from productos.observability import middleware

ids = [middleware._request_id(None, None) for _ in range(1000)]
children = []
for _ in range(2):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, json.dumps([middleware._request_id(None, None) for _ in range(3)]).encode())
        os._exit(0)
    os.close(write)
    children.append((pid, read))
forked = []
for pid, read in children:
    with os.fdopen(read, "rb") as pipe:
        forked.append(json.loads(pipe.read()))
    os.waitpid(pid, 0)
print(json.dumps({"parent": ids, "children": forked}))
"""


def test_new_request_ids_are_128_bit_hex_and_differ_between_forked_workers() -> None:
    run = subprocess.run([sys.executable, "-c", _FORKING_PARENT], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    ids, (first, second) = result["parent"], result["children"]
    assert len(set(ids)) == 1000
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in ids)
    assert not set(first) & set(second)
    assert not set(first) & set(ids)


@pytest.mark.parametrize(
    ("setting", "allowed"),
    [
        ("", []),
        ("10.0.0.7/16, 127.0.0.1", ["10.0.0.0/16", "127.0.0.1"]),
        ("10.0.0.0/16,*", ["*"]),  # uvicorn trusts every peer for "*" alone; in a list it would be a host's name
    ],
)
def test_gunicorn_passes_the_trusted_proxies_to_uvicorns_workers(setting: str, allowed: list[str]) -> None:
    """The tuned configuration's ``forwarded_allow_ips``, as gunicorn validates it and its uvicorn workers get it."""
    script = (
        "from gunicorn.config import validate_string_to_addr_list\n"
        "from productos import gunicorn_conf\n"
        "print(validate_string_to_addr_list(gunicorn_conf.forwarded_allow_ips))\n"
    )
    env = {**os.environ, "PRODUCTOS_TRUSTED_PROXIES": setting}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == repr(allowed)
