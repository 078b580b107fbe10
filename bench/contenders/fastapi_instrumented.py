"""(f) FastAPI on a raw asyncpg pool, as (c), with the observability users assemble from the ecosystem.

The endpoints, SQL, pool (10..30) and JSON are (c)'s; on top, each configured as its documentation says:

- **Metrics**: prometheus-fastapi-instrumentator, ``Instrumentator().instrument(app).expose(app)`` (its default
  metrics: ``http_requests_total``, request and response sizes, two duration histograms), in prometheus-client's
  multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is set before gunicorn starts (the harness makes a fresh
  directory per start, in ``/dev/shm`` as productos does, and deletes it after), and gunicorn's ``child_exit``
  calls ``multiprocess.mark_process_dead`` (``bench/contenders/fastapi_instrumented_gunicorn.py``). ``/metrics``
  on either worker adds up both.
- **Traces**: an OpenTelemetry SDK ``TracerProvider`` set globally, ``FastAPIInstrumentor.instrument_app(app)``
  (a server span per request, and its ``http receive``/``http send`` spans) and
  ``AsyncPGInstrumentor().instrument()`` (a client span per query).
- **Access log**: one JSON line per request on stdout (python-json-logger's ``JsonFormatter`` on the root logger),
  written by an ``@app.middleware("http")`` function, as FastAPI's middleware tutorial writes one: method, path,
  route, status, duration, client, the request id (``X-Request-ID`` taken from the request, else a ``uuid4``;
  returned in the response) and the trace and span ids.

What it matches of productos' defaults (``PRODUCTOS_TRACING_ENABLED=true``, metrics and access log on,
``PRODUCTOS_OTEL_EXPORTER=auto``; ``productos/observability/telemetry.py`` and ``tracing.py``):

- No ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the benchmark's case): nothing is exported. productos then samples every span
  out (``ALWAYS_OFF``, no span processor: spans carry trace ids for the logs, nothing is recorded), and so does
  this provider. A ``BatchSpanProcessor`` needs an exporter, and one that drops what it is given would still
  record every span, which productos does not: that would not be the same signals at a higher cost, but more.
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (in bench.run's environment, which every contender inherits; not through
  ``--productos-env``, which reaches (a) only): spans are sampled by the SDK's default sampler and sent by a
  ``BatchSpanProcessor(OTLPSpanExporter())`` to ``<endpoint>/v1/traces``, as productos does then.
- No OpenTelemetry metrics: productos records them only when it exports; here no ``MeterProvider`` is set, so
  the instrumentation's are no-ops, as the SDK leaves them.
- FastAPI's own telemetry is off (``telemetry={"tracing": False, "metrics": False, "logs": False}``, as
  ``productos.runtime.service`` does), so nothing is traced or measured twice.
- The tracer provider is made at import, which gunicorn (without ``--preload``) does in each worker after the
  fork: one provider per worker, its processor's thread in the worker.

``gunicorn -c python:bench.contenders.fastapi_instrumented_gunicorn -w 2 -k uvicorn_worker.UvicornWorker
bench.contenders.fastapi_instrumented:app`` with ``PROMETHEUS_MULTIPROC_DIR`` pointing at an empty directory.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated, Any

import asyncpg  # type: ignore[import-untyped]
from fastapi import FastAPI, HTTPException, Query, Request, Response
from opentelemetry import trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import BaseModel, Field
from pythonjsonlogger.json import JsonFormatter

from bench.contenders._rows import INSERT, POOL_MAX, POOL_MIN, SELECT_ONE, SELECT_PAGE, dsn, dump, row_dict

SERVICE_NAME = "fastapi-instrumented"

# As productos.runtime.service: FastAPI (0.165 here) traces and measures each request itself once a global
# OpenTelemetry provider is set; the instrumentation below already does.
_FASTAPI_TELEMETRY_OFF: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI).parameters
    else {}
)


def configure_logging() -> logging.Logger:
    """JSON lines on stdout for every logger (python-json-logger's documented setup, on the root logger)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s %(process)d"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return logging.getLogger("access")


def configure_tracing() -> TracerProvider:
    """The worker's tracer provider, set globally (see the module's docstring for the exporter choice)."""
    resource = Resource.create({"service.name": SERVICE_NAME})
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    trace.set_tracer_provider(provider)
    return provider


access_logger = configure_logging()
tracer_provider = configure_tracing()
AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]


class ProductoIn(BaseModel):
    nombre: str = Field(min_length=1, max_length=200)
    descripcion: str | None = None
    precio: Decimal = Field(gt=0, max_digits=10, decimal_places=2)
    stock: int = Field(0, ge=0)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, asyncpg.Pool]]:
    async with asyncpg.create_pool(dsn(), min_size=POOL_MIN, max_size=POOL_MAX) as pool:
        yield {"pool": pool}
    # Export what is pending (when there is an exporter) and stop the processor's thread; it may block.
    await asyncio.to_thread(tracer_provider.shutdown)


app = FastAPI(lifespan=lifespan, **_FASTAPI_TELEMETRY_OFF)


@app.middleware("http")
async def access_log(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    start = time.perf_counter()
    response = await call_next(request)
    duration_ms = (time.perf_counter() - start) * 1000
    response.headers["X-Request-ID"] = request_id
    span_context = trace.get_current_span().get_span_context()
    route = request.scope.get("route")
    access_logger.info(
        "request",
        extra={
            "request_id": request_id,
            "trace_id": format(span_context.trace_id, "032x"),
            "span_id": format(span_context.span_id, "016x"),
            "method": request.method,
            "path": request.url.path,
            "route": getattr(route, "path", None),
            "status": response.status_code,
            "duration_ms": round(duration_ms, 3),
            "client_ip": request.client.host if request.client else None,
        },
    )
    return response


Instrumentator().instrument(app).expose(app)
FastAPIInstrumentor.instrument_app(app)


def _json(body: bytes, status_code: int = 200) -> Response:
    return Response(body, status_code=status_code, media_type="application/json")


@app.get("/productos")
async def list_productos(
    request: Request,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    rows = await request.state.pool.fetch(SELECT_PAGE, after, limit)
    return _json(dump([row_dict(r) for r in rows]))


@app.post("/productos", status_code=201)
async def create_producto(request: Request, body: ProductoIn) -> Response:
    row = await request.state.pool.fetchrow(INSERT, body.nombre, body.descripcion, body.precio, body.stock)
    return _json(dump(row_dict(row)), status_code=201)


@app.get("/productos/{producto_id}")
async def get_producto(request: Request, producto_id: int) -> Response:
    row = await request.state.pool.fetchrow(SELECT_ONE, producto_id)
    if row is None:
        raise HTTPException(404, f"Producto {producto_id} no encontrado")
    return _json(dump(row_dict(row)))
