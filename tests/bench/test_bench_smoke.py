"""The benchmark harness's pieces, cheaply: contenders start and agree with productos, wrk output parses,
the report renders. Never a timing assertion: the machine is shared and noisy."""

from __future__ import annotations

import importlib.util
import json
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from bench import report, seed
from bench.harness import Server, contenders, get_scenario, parse_wrk, post_scenario, run_wrk, variant

ROWS = 30
#: (f)'s packages are in the bench extra.
HAS_F = all(
    importlib.util.find_spec(name)
    for name in (
        "prometheus_fastapi_instrumentator",
        "opentelemetry.instrumentation.fastapi",
        "opentelemetry.instrumentation.asyncpg",
        "pythonjsonlogger",
    )
)
needs_f = pytest.mark.skipif(not HAS_F, reason="(f)'s packages are in the bench extra")


def _normalized(body: Any) -> Any:
    """Datetimes as instants: pydantic writes UTC as ``Z``, ``isoformat()`` as ``+00:00``."""
    if isinstance(body, list):
        return [_normalized(item) for item in body]
    return {
        key: datetime.fromisoformat(value) if key in ("created_at", "updated_at") else value
        for key, value in body.items()
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def database_url(workdir: Path) -> Iterator[str]:
    with seed.scratch_database(workdir, ROWS, "bench_test") as url:
        yield url


@pytest.fixture(scope="module")
def servers(workdir: Path, database_url: str) -> Iterator[dict[str, Server]]:
    specs = contenders()
    # g: productos through a PgBouncer the server starts (Debian's package; .ci/run installs it).
    keys = "abcd" + ("e" if importlib.util.find_spec("psycopg2") else "") + ("f" if HAS_F else "") + "g"
    started: dict[str, Server] = {}
    try:
        for key in keys:
            server = Server(specs[key], database_url, workdir)
            server.start()
            started[key] = server
        yield started
    finally:
        for server in started.values():
            server.stop()


pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_asyncpg_contenders_answer_exactly_what_productos_answers(servers: dict[str, Server]) -> None:
    for path in ("/productos/7", "/productos?limit=5", "/productos?after=10&limit=3", "/productos/10"):
        keys = ("abcf" if "f" in servers else "abc") + "g"
        bodies = {key: httpx.get(servers[key].base_url + path, timeout=10).json() for key in keys}
        for key in keys[1:]:
            assert bodies[key] == bodies["a"], (key, path)


def test_orm_contenders_answer_the_same_rows(servers: dict[str, Server]) -> None:
    expected = httpx.get(servers["a"].base_url + "/productos/7", timeout=10).json()
    first_five = httpx.get(servers["a"].base_url + "/productos?limit=5", timeout=10).json()
    for key in "de":
        if key not in servers:
            continue  # psycopg2 is in the bench extra, not in the test one
        base = servers[key].base_url
        assert _normalized(httpx.get(base + "/productos/7", timeout=10).json()) == _normalized(expected)
        listing = servers[key].contender.small[1].first_path
        assert _normalized(httpx.get(base + listing, timeout=10).json()[:5]) == _normalized(first_five)


def test_every_contender_creates_with_the_same_shape(servers: dict[str, Server]) -> None:
    shapes = {}
    for key, server in servers.items():
        path = server.contender.small[2].first_path
        response = httpx.post(server.base_url + path, json={"nombre": "Ratón", "precio": 12.5, "stock": 2}, timeout=10)
        assert response.status_code == 201, (key, response.text)
        body = response.json()
        assert (body["nombre"], body["precio"], body["stock"], body["descripcion"]) == (
            "Ratón",
            12.5,
            2,
            None,
        )
        shapes[key] = sorted(body)
    assert all(shape == shapes["a"] for shape in shapes.values()), shapes


def test_the_pgbouncer_contender_goes_through_its_pgbouncer(servers: dict[str, Server]) -> None:
    server = servers["g"]
    assert server.pgbouncer is not None and server.env["DB_POOLER"] == "transaction"
    assert f"@127.0.0.1:{server.pgbouncer.port}/" in server.env["DATABASE_URL"]
    assert httpx.get(server.base_url + "/productos/3", timeout=10).status_code == 200
    assert "login attempt: db=productos_bench_test" in server.pgbouncer.output()


def test_workers_report_their_peak_memory(servers: dict[str, Server]) -> None:
    for server in servers.values():
        peaks = server.peak_rss_kib()
        assert len(peaks) == 2 and all(kib > 0 for kib in peaks.values()), (server.contender.name, peaks)


def _access_lines(server: Server) -> list[dict[str, Any]]:
    lines = []
    for line in server.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"name": "access"' in line:
            lines.append(json.loads(line))
    return lines


def _requests_total(server: Server, handler: str) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    prefix = f'http_requests_total{{handler="{handler}",method="GET",status="2xx"}} '
    return sum(float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))


@needs_f
def test_instrumented_contender_counts_logs_and_traces_every_request(servers: dict[str, Server]) -> None:
    """(f): /metrics adds up both workers (multiprocess mode), one JSON access line per request with the
    request id it echoes, and a trace id from the request's span."""
    server = servers["f"]
    assert server.multiproc_dir is not None and server.env["PROMETHEUS_MULTIPROC_DIR"] == str(server.multiproc_dir)
    before = _requests_total(server, "/productos/{producto_id}")
    sent: list[str] = []
    pids: set[int] = set()
    # Fresh connections until both workers have answered some (the kernel picks the worker).
    while len(sent) < 200 and (len(pids) < 2 or len(sent) < 10):
        request_id = f"bench-smoke-{len(sent)}"
        response = httpx.get(server.base_url + "/productos/7", headers={"X-Request-ID": request_id}, timeout=10)
        assert response.status_code == 200 and response.headers["x-request-id"] == request_id
        sent.append(request_id)
        pids = {line["process"] for line in _access_lines(server) if line.get("request_id", "").startswith("bench-")}
    assert pids == set(server.worker_pids()), pids
    assert _requests_total(server, "/productos/{producto_id}") - before == len(sent)
    lines = {line["request_id"]: line for line in _access_lines(server)}
    for request_id in sent:
        line = lines[request_id]
        assert (line["method"], line["path"], line["route"], line["status"]) == (
            "GET",
            "/productos/7",
            "/productos/{producto_id}",
            200,
        )
        assert line["duration_ms"] > 0 and int(line["trace_id"], 16) != 0 and int(line["span_id"], 16) != 0
    unnamed = httpx.get(server.base_url + "/productos/8", timeout=10)
    assert len(unnamed.headers["x-request-id"]) == 32  # made up when none came in


class _OtlpSink(BaseHTTPRequestHandler):
    """Receives OTLP/HTTP protobuf span exports; keeps each span's name and trace id."""

    spans: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":  # not the metrics a contender may send to /v1/metrics
            for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((span.name, span.trace_id) for span in scope_spans.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def sink_spans() -> list[tuple[str, bytes]]:
    return list(_OtlpSink.spans)


@needs_f
def test_instrumented_contender_exports_spans_to_an_otlp_endpoint(workdir: Path, database_url: str) -> None:
    """With ``OTEL_EXPORTER_OTLP_ENDPOINT`` (productos' switch too) (f) records and exports the request's spans:
    the server span and the query's, in one trace."""
    _OtlpSink.spans = []
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _OtlpSink)
    thread = threading.Thread(target=sink.serve_forever, daemon=True)
    thread.start()
    try:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_port}", "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with Server(contenders()["f"], database_url, workdir, env) as server:
            assert httpx.get(server.base_url + "/productos/7", timeout=10).status_code == 200
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not any(n == "GET /productos/{producto_id}" for n, _ in sink_spans()):
                time.sleep(0.1)
    finally:
        sink.shutdown()
        sink.server_close()
    names: dict[bytes, set[str]] = {}
    for name, trace_id in sink_spans():
        names.setdefault(trace_id, set()).add(name)
    assert any({"GET /productos/{producto_id}", "SELECT"} <= found for found in names.values()), names


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
def test_wrk_drives_a_contender_and_its_output_parses(servers: dict[str, Server]) -> None:
    base = servers["b"].base_url
    for scenario in (get_scenario("get_id", "/productos/{n}", 1, ROWS), post_scenario("/productos")):
        result = run_wrk(base, scenario, connections=2, duration=1)
        assert result.requests >= 1 and result.errors == 0, result
        assert result.p99_ms is not None and result.p50_ms is not None


def test_parse_wrk_finds_the_report_line() -> None:
    line = (
        'BENCH_JSON {"duration_us":1000000,"requests":5,"bytes":10,'
        '"errors":{"connect":0,"read":0,"write":0,"status":1,"timeout":0},'
        '"latency_us":{"mean":1.0,"max":9,"p50":2,"p90":3,"p99":4,"p999":5}}'
    )
    assert parse_wrk("Running 1s test\n" + line + "\n")["errors"]["status"] == 1
    with pytest.raises(ValueError):
        parse_wrk("Running 1s test\n")


def _synthetic_result(tmp_path: Path) -> dict[str, Any]:
    runs = []
    for key, rps in zip("abcdefg", (900.0, 1200.0, 1000.0, 400.0, 100.0, 600.0, 450.0), strict=True):
        for scenario in ("get_id", "first_page_1m", "deep_page_1m"):
            for conc in (8, 64):
                for round_no in (1, 2):
                    runs.append({
                        "round": round_no, "contender": key, "scenario": scenario, "connections": conc,
                        "rps": rps * round_no, "p50_ms": 1.0, "p99_ms": 2.0 * conc / 8, "errors": 0,
                        "requests": 10, "note": "",
                    })  # fmt: skip
    summary = report.summarize(runs)
    ratio_rows = report.ratios(summary, [8, 64])
    return {
        "meta": {
            "date": "2026-01-01", "stem": "2026-01-01", "quick": False, "command": "python -m bench.run",
            "rounds": 2, "duration_s": 5, "warmup_s": 1, "connections": [8, 64], "order": list("abcdefg"),
            "postgres": "15", "contenders": {k: {"name": k * 3} for k in "abcdefg"},
            "machine": {"nproc": 2, "cpu_model": "cpu", "memory_gib": 1, "kernel": "6", "python": "3.11",
                        "fastapi": "x", "sqlalchemy": "x", "uvicorn": "x", "wrk": "wrk"},
        },
        "summary": summary, "ratios": ratio_rows, "goals": report.goals(summary, ratio_rows, [8, 64]),
        "rss": [{"contender": "a", "session": "small", "peak_rss_kib": {"1": 2048}}], "all_rows": [],
    }  # fmt: skip


def test_report_computes_medians_ratios_and_goals(tmp_path: Path) -> None:
    result = _synthetic_result(tmp_path)
    assert result["summary"]["a"]["get_id"]["8"]["rps"] == 1350.0  # median of 900 and 1800
    row = next(r for r in result["ratios"] if r["scenario"] == "get_id" and r["connections"] == 8)
    assert (row["a/b"], row["a/c"], row["a/e"], row["a/f"], row["p99 a/c"]) == (0.75, 0.9, 9.0, 1.5, 1.0)
    met = {g["goal"].split(":")[0]: g["met"] for g in result["goals"]}
    assert met[">= 0.9x (c)'s req/s on every endpoint"] is True
    assert met["well ahead of (f), FastAPI+asyncpg with the ecosystem's observability"] is True
    section = report.markdown(result)
    assert "| GET /productos/{id} | c8 | 0.75 | 0.90 | 2.25 | 9.00 | 1.50 | 1.00 |" in section
    assert "| a/f from 1.5 (GET /productos/{id}, c8) to 1.5 " in section
    assert "| GET /productos/{id} | c64 | 0.50 | 1.00 |" in section  # (g) through PgBouncer over (a)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold\n{report.README_END}\nend\n")
    report.write_readme(readme, section)
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith(f"{report.README_END}\nend\n")


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib is in the bench extra")
def test_report_draws_the_chart(tmp_path: Path) -> None:
    report.chart(_synthetic_result(tmp_path), tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"


def test_variants_derive_from_productos() -> None:
    base = contenders({"LOG_LEVEL": "info"})["a"]
    pool = variant(base, "pool30:DB_POOL_SIZE=30,DB_MAX_OVERFLOW=0")
    assert (pool.key, pool.app, pool.gunicorn_args) == ("pool30", base.app, base.gunicorn_args)
    assert pool.env == {**base.env, "DB_POOL_SIZE": "30", "DB_MAX_OVERFLOW": "0"}
    other = variant(base, "core:APP=bench.contenders.productos_variants:sqlalchemy_core,LOG_LEVEL=warning")
    assert other.app == "bench.contenders.productos_variants:sqlalchemy_core" and other.env["LOG_LEVEL"] == "warning"
    with pytest.raises(ValueError):
        variant(base, "bad:NOEQUALS")
