"""Observability end to end: real gunicorn with 2 workers on PostgreSQL.

- ``/metrics`` on any worker counts every request of every worker exactly once; the pool gauges add up over
  the workers to the sessions PostgreSQL sees; a worker killed with SIGKILL and replaced leaves no gauge
  behind; route labels are templates.
- A request's access line, its spans (OTLP, to a small collector the test runs) and its metrics (OTLP
  exemplars) share one trace id; an incoming ``traceparent`` is continued.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import HistogramDataPoint
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from tests.integration.servers import Gunicorn

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROUTE = "/productos/{producto_id}"
ACTIVE = "http_server_active_requests"
DB_FIELDS = ("db.system.name", "db.system", "db.namespace", "db.operation.name")
T = TypeVar("T")


def log_lines(server: Gunicorn) -> list[dict[str, Any]]:
    lines = []
    for raw in server.output().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 15) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def access_lines(server: Gunicorn, route: str | None = ROUTE) -> list[dict[str, Any]]:
    return [
        line
        for line in log_lines(server)
        if line.get("logger") == "productos.access" and (route is None or line.get("http.route") == route)
    ]


def access_line(server: Gunicorn, request_id: str) -> dict[str, Any]:
    """The access line of one request (written just after its response went out)."""

    def find() -> list[dict[str, Any]]:
        return [line for line in access_lines(server, None) if line.get("request_id") == request_id]

    (line,) = wait_for(f"the access line of {request_id}", find)
    return line


def started_workers(server: Gunicorn) -> set[int]:
    """Pids of the workers whose app has started (lifespan done)."""
    return {
        line["pid"]
        for line in log_lines(server)
        if line.get("logger") == "productos.runtime.service" and line["message"] == "started"
    }


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: Gunicorn) -> Samples:
    response = httpx.get(f"{server.base_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (sample, found), value in samples.items() if sample == name and wanted <= found)


async def sessions(database_url: str, application_name: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application_name
        )
        return count
    finally:
        await conn.close()


async def pool_gauges_match_the_server(server: Gunicorn, database_url: str, name: str) -> Samples:
    """The workers' idle + used connections, summed by /metrics, are the sessions PostgreSQL has open."""
    for _ in range(100):
        samples = scrape(server)
        open_connections = total(samples, "db_client_connection_count")
        if open_connections == await sessions(database_url, name):
            assert total(samples, "db_client_connection_count", db_client_connection_state="used") == 0
            return samples
        await asyncio.sleep(0.05)  # a killed worker's sessions take a moment to end on the server
    raise AssertionError("pool gauges never matched pg_stat_activity")


async def test_metrics_are_exact_across_workers_and_a_killed_worker_leaves_no_gauge(
    workdir: Path, database_url: str
) -> None:
    name = f"productos-obs-{uuid.uuid4().hex[:8]}"
    env = {
        "DATABASE_URL": database_url,
        "PRODUCTOS_SERVICE_NAME": name,
        "DB_POOL_SIZE": "4",
        "DB_MAX_OVERFLOW": "2",
    }
    with Gunicorn(workdir, env, workers=2) as server:
        wait_for("both workers to start", lambda: len(started_workers(server)) == 2)
        created = httpx.post(f"{server.base_url}/productos", json={"nombre": "contado", "precio": 1}).json()

        # 1000 requests to 1000 different ids (100 exist), on new connections so both workers accept some.
        ids = [created["id"] if n % 10 == 0 else 1_000_000 + n for n in range(1000)]
        gate = asyncio.Semaphore(16)
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=10) as client:

            async def get(producto_id: int) -> int:
                async with gate:
                    headers = {"X-Forwarded-For": "203.0.113.9"}  # no trusted proxy: ignored
                    return (await client.get(f"/productos/{producto_id}", headers=headers)).status_code

            statuses = await asyncio.gather(*(get(i) for i in ids))
        assert (statuses.count(200), statuses.count(404)) == (100, 900)

        # Counted and logged right after each response went out: the last ones may take a moment.
        wait_for("1000 access lines", lambda: len(access_lines(server)) >= 1000)
        access = access_lines(server)
        assert len(access) == 1000
        served_by = {line["pid"] for line in access}
        assert len(served_by) == 2, "both workers must have served requests"
        assert {line["client.address"] for line in access} == {"127.0.0.1"}  # X-Forwarded-For ignored

        duration = "http_server_request_duration_seconds_count"
        wait_for(
            "every request counted",
            lambda: total(scrape(server), duration, http_route=ROUTE) >= 1000,
        )
        samples = scrape(server)
        assert total(samples, duration, http_route=ROUTE, http_response_status_code="200") == 100
        assert total(samples, duration, http_route=ROUTE, http_response_status_code="404") == 900
        routes = {dict(labels)["http_route"] for (sample, labels) in samples if sample == duration}
        assert routes <= {ROUTE, "/productos", "/health/live", "/metrics"}
        # Only this scrape is in flight (a worker's figures are at most a second behind: batched).
        wait_for("no request in flight but the scrape", lambda: total(scrape(server), ACTIVE) == 1)
        # One SELECT per request, plus each worker's dialect's own first queries (server version, schema).
        database = str(make_url(database_url).database)
        selects = total(
            samples, "db_client_operation_duration_seconds_count", db_operation_name="SELECT", db_namespace=database
        )
        assert 1000 <= selects <= 1000 + 2 * 2
        samples = await pool_gauges_match_the_server(server, database_url, name)
        assert total(samples, "db_client_connection_max") == 2 * (4 + 2)
        assert total(samples, "db_client_connection_pending_requests") == 0

        # SIGKILL one worker: gunicorn replaces it; the dead one's live gauges go, its counts stay.
        directory = next(
            line["message"].rsplit(" ", 1)[1]
            for line in log_lines(server)
            if line["message"].startswith("Prometheus multiprocess directory")
        )
        victim = sorted(served_by)[0]
        assert any(re.fullmatch(rf"gauge_livesum_{victim}\.db", f) for f in os.listdir(directory))
        os.kill(victim, signal.SIGKILL)
        wait_for("a replacement worker", lambda: len(started_workers(server) - served_by) == 1)
        files = os.listdir(directory)
        assert not [f for f in files if f.startswith("gauge_live") and f.endswith(f"_{victim}.db")]
        assert f"histogram_{victim}.db" in files

        samples = await pool_gauges_match_the_server(server, database_url, name)
        assert total(samples, "db_client_connection_max") == 2 * (4 + 2)
        assert total(samples, duration, http_route=ROUTE, http_response_status_code="200") == 100
        assert total(samples, duration, http_route=ROUTE, http_response_status_code="404") == 900
        wait_for("no request in flight but the scrape", lambda: total(scrape(server), ACTIVE) == 1)
    assert not Path(directory).exists(), "the master removes the multiprocess directory when it exits"


class OtlpCollector:
    """A small OTLP/HTTP receiver: keeps the spans and metrics that the workers' exporters send."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Span]] = []
        self.histogram_points: list[tuple[str, HistogramDataPoint]] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector.receive(self.path, body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def receive(self, path: str, body: bytes) -> None:
        with self.lock:
            if path == "/v1/traces":
                traces = ExportTraceServiceRequest.FromString(body)
                for resource_spans in traces.resource_spans:
                    resource = attributes(resource_spans.resource.attributes)
                    for scope in resource_spans.scope_spans:
                        self.spans.extend((resource, span) for span in scope.spans)
            elif path == "/v1/metrics":
                export = ExportMetricsServiceRequest.FromString(body)
                for resource_metrics in export.resource_metrics:
                    for scope in resource_metrics.scope_metrics:
                        for metric in scope.metrics:
                            if metric.HasField("histogram"):
                                self.histogram_points.extend((metric.name, p) for p in metric.histogram.data_points)

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [span for _, span in self.spans if span.trace_id.hex() == trace_id]

    def exemplar_traces(self, metric: str, **wanted: Any) -> set[str]:
        with self.lock:
            return {
                exemplar.trace_id.hex()
                for name, point in self.histogram_points
                if name == metric and wanted.items() <= attributes(point.attributes).items()
                for exemplar in point.exemplars
            }

    def __enter__(self) -> OtlpCollector:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def attributes(pairs: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in pairs:
        assert isinstance(pair, KeyValue)
        kind = pair.value.WhichOneof("value")
        found[pair.key] = getattr(pair.value, kind) if kind else None
    return found


def test_access_line_spans_and_metrics_share_one_trace_id(workdir: Path, database_url: str) -> None:
    name = f"productos-otlp-{uuid.uuid4().hex[:8]}"
    with OtlpCollector() as collector:
        env = {
            "DATABASE_URL": database_url,
            "PRODUCTOS_SERVICE_NAME": name,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "PRODUCTOS_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=integration",
        }
        with Gunicorn(workdir, env, workers=2) as server:
            created = httpx.post(f"{server.base_url}/productos", json={"nombre": "trazado", "precio": 2}).json()
            response = httpx.get(
                f"{server.base_url}/productos/{created['id']}",
                headers={
                    "X-Request-ID": "trace-me",
                    "X-Forwarded-For": "198.51.100.1, 203.0.113.9, 10.1.2.3",
                    "X-Forwarded-Proto": "https",
                },
            )
            assert response.status_code == 200 and response.headers["x-request-id"] == "trace-me"
            line = access_line(server, "trace-me")
            trace_id, span_id = line["trace_id"], line["span_id"]
            # Through trusted proxies (the peer, then 10.1.2.3): the first address that is not one is the client.
            request_fields = {
                "http.request.method": "GET",
                "http.route": ROUTE,
                "url.path": f"/productos/{created['id']}",
                "url.scheme": "https",
                "http.response.status_code": 200,
                "client.address": "203.0.113.9",
            }
            assert {key: line[key] for key in request_fields} == request_fields

            # The span: the request's, named by its route, with the query's span under it. FastAPI's own
            # spans are off (the request is timed once); a worker's first connection also shows the
            # dialect's own first queries (server version, schema) under the request that opened it.
            wait_for("the request's spans", lambda: len(collector.trace(trace_id)) >= 2)
            time.sleep(0.5)  # anything else in this trace would have arrived by now
            spans = collector.trace(trace_id)
            kinds = [s.kind for s in spans]
            assert set(kinds) == {Span.SpanKind.SPAN_KIND_SERVER, Span.SpanKind.SPAN_KIND_CLIENT}, spans
            (server_span,) = [s for s in spans if s.kind == Span.SpanKind.SPAN_KIND_SERVER]
            assert server_span.span_id.hex() == span_id and server_span.name == f"GET {ROUTE}"
            span_attributes = attributes(server_span.attributes)
            assert {key: span_attributes[key] for key in request_fields} == request_fields  # as the access line
            queries = [s for s in spans if s.kind == Span.SpanKind.SPAN_KIND_CLIENT]
            assert all(query.parent_span_id.hex() == span_id for query in queries)
            (lookup,) = [q for q in queries if "FROM productos" in attributes(q.attributes)["db.query.text"]]
            database = make_url(database_url).database
            assert {key: attributes(lookup.attributes)[key] for key in DB_FIELDS} == {
                "db.system.name": "postgresql",
                "db.system": "postgresql",
                "db.namespace": database,
                "db.operation.name": "SELECT",
            }
            resource = next(r for r, s in collector.spans if s.span_id == server_span.span_id)
            assert resource["service.name"] == name and resource["process.pid"] == line["pid"]
            # The service's version (the products service's, create_service's default), not the library's;
            # OTEL_RESOURCE_ATTRIBUTES is honoured.
            assert resource["service.version"] == "0.1.0" and resource["telemetry.distro.name"] == "productos"
            assert resource["deployment.environment.name"] == "integration"

            # The metrics: their exemplars carry the trace id.
            wait_for(
                "the request's exemplar",
                lambda: (
                    trace_id
                    in collector.exemplar_traces(
                        "http.server.request.duration",
                        **{"http.route": ROUTE, "url.scheme": "https", "http.response.status_code": 200},
                    )
                ),
            )
            wait_for(
                "the query's exemplar",
                lambda: (
                    trace_id
                    in collector.exemplar_traces(
                        "db.client.operation.duration", **{"db.operation.name": "SELECT", "db.namespace": database}
                    )
                ),
            )

            # An incoming W3C trace context is continued.
            incoming, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
            httpx.get(
                f"{server.base_url}/health/live",
                headers={"X-Request-ID": "continued", "traceparent": f"00-{incoming}-{parent}-01"},
            )
            line = access_line(server, "continued")
            assert line["trace_id"] == incoming
            (span,) = wait_for("the continued span", lambda: collector.trace(incoming))
            assert span.parent_span_id.hex() == parent


def test_gunicorn_and_uvicorn_write_json_lines_even_when_the_app_cannot_start(workdir: Path) -> None:
    """uvicorn's first lines and a failed startup's traceback are JSON too, not Python's plain last resort."""
    server = Gunicorn(workdir, {"DATABASE_URL": "oracle://nobody@nowhere/productos"}, workers=1)
    assert server.run(timeout=60) != 0
    output = server.log_path.read_bytes().decode()  # strictly: every byte written is UTF-8
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]  # every line parses
    messages = {line["message"] for line in lines}
    assert {"Starting gunicorn", "Application startup failed. Exiting."} <= {m.split(" 2")[0] for m in messages}
    assert any(m.startswith("Started server process") for m in messages)
    assert any(m.startswith("Traceback") for m in messages)  # the traceback, as one JSON line
