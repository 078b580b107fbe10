"""Database instrumentation on a real PostgreSQL: pool gauges from the pool's events, queries by operation."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import asyncpg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, use_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from productos.infra.db.engine import create_engine
from productos.observability.db import instrument_engine
from productos.observability.metrics import Metrics
from productos.observability.tracing import Tracing
from productos.services.productos.domain import NewProducto, ProductoPatch
from productos.services.productos.service import ProductoService
from tests.conftest import make_settings
from tests.integration.unit_paths import PATHS, Factory

pytestmark = pytest.mark.postgres

POOL = {"db_client_connection_pool_name": "test"}


class PoolView:
    """The pool's gauges, checked against the pool's own count and the server's list of sessions."""

    def __init__(self, engine: AsyncEngine, metrics: Metrics, admin: asyncpg.Connection, name: str) -> None:
        self.engine = engine
        self.registry = metrics.registry
        self.admin = admin
        self.name = name

    def value(self, name: str, **labels: str) -> float:
        found = self.registry.get_sample_value(name, {**POOL, **labels})
        return 0.0 if found is None else found

    def counts(self) -> tuple[float, float]:
        return (
            self.value("db_client_connection_count", db_client_connection_state="used"),
            self.value("db_client_connection_count", db_client_connection_state="idle"),
        )

    async def assert_counts(self, used: int, idle: int) -> None:
        assert self.counts() == (used, idle)
        assert self.engine.sync_engine.pool.checkedout() == used  # type: ignore[attr-defined]
        # A connection the pool let go is closed without waiting (terminated): its server session ends a moment
        # later, so the server's count may lag the pool's; it must catch up.
        for _ in range(250):
            sessions = await self.admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", self.name
            )
            if sessions == used + idle:
                break
            await asyncio.sleep(0.02)
        assert sessions == used + idle


async def test_pool_gauges_follow_the_pools_events(postgres_url: str) -> None:
    name = f"productos-pool-{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        postgres_url,
        db_pool_size=2,
        db_max_overflow=1,
        db_pool_timeout=0.3,
        db_pool_pre_ping_idle=0,  # ping every checkout: the dead connection below is found on checkout
        service_name=name,
    )
    engine = create_engine(settings)
    metrics = Metrics()
    instrument_engine(engine, metrics=metrics, tracing=None, pool_name="test")
    admin = await asyncpg.connect(make_url(postgres_url).set(drivername="postgresql").render_as_string(False))
    view = PoolView(engine, metrics, admin, name)
    try:
        assert view.value("db_client_connection_max") == 3
        await view.assert_counts(used=0, idle=0)

        connections: list[AsyncConnection] = [await engine.connect() for _ in range(3)]
        await view.assert_counts(used=3, idle=0)

        # The pool is exhausted: a fourth caller waits (pending), then times out.
        waiter = asyncio.create_task(engine.connect().start())
        await asyncio.sleep(0.1)
        assert view.value("db_client_connection_pending_requests") == 1
        with pytest.raises(PoolTimeoutError):
            await waiter
        assert view.value("db_client_connection_pending_requests") == 0
        assert view.value("db_client_connection_timeouts_total") == 1
        assert view.value("db_client_connection_wait_time_seconds_count") == 4
        assert view.value("db_client_connection_wait_time_seconds_sum") >= 0.3

        # Our own deadline around the acquisition (the unit of work's) cancels the wait: a timeout too.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await engine.connect()
        assert view.value("db_client_connection_timeouts_total") == 2
        assert view.value("db_client_connection_pending_requests") == 0

        for connection in connections:
            await connection.close()
        await view.assert_counts(used=0, idle=3)  # every connection opened is kept (no overflow to close)

        # An invalidated connection is gone, not idle.
        connection = await engine.connect()
        await view.assert_counts(used=1, idle=2)
        await connection.invalidate()
        await connection.close()
        await view.assert_counts(used=0, idle=2)

        # A checkout that reconnects after the database dropped the connection.
        async with engine.connect() as connection:  # the emptied record opens a new connection
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await view.assert_counts(used=0, idle=3)
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        for _ in range(50):  # the server ends the session asynchronously
            if not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                break
            await asyncio.sleep(0.02)
        assert view.counts() == (0, 3)  # the pool cannot know yet
        async with engine.connect() as connection:  # the pre-ping finds it dead (LIFO) and reconnects
            assert (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pid
            await view.assert_counts(used=1, idle=2)
        await view.assert_counts(used=0, idle=3)

        # dispose() recreates the pool: the idle connections close, and the new pool is still timed.
        waits = view.value("db_client_connection_wait_time_seconds_count")
        await engine.dispose()
        await view.assert_counts(used=0, idle=0)
        async with engine.connect() as connection:
            await view.assert_counts(used=1, idle=0)
        assert view.value("db_client_connection_wait_time_seconds_count") == waits + 1
        await view.assert_counts(used=0, idle=1)
        await engine.dispose()
        await view.assert_counts(used=0, idle=0)
    finally:
        await engine.dispose()
        await admin.close()


def operations(metrics: Metrics) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "db_client_operation_duration_seconds_count":
                assert sample.labels["db_system_name"] == "postgresql" and sample.labels["db_namespace"]
                counts[sample.labels["db_operation_name"]] = sample.value
    return counts


@pytest.mark.parametrize("factory", [path for path, _ in PATHS], ids=[name for _, name in PATHS])
async def test_queries_are_timed_by_operation_and_traced_under_the_request(
    clean_postgres: str, factory: Factory
) -> None:
    engine = create_engine(make_settings(clean_postgres))
    metrics = Metrics()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider, TraceContextTextMapPropagator())
    async with engine.connect():
        pass  # the dialect's own first queries (version, schema...) are timed too: keep them out of the counts
    instrument_engine(engine, metrics=metrics, tracing=tracing)
    service = ProductoService(factory(engine))
    try:
        with tracing.tracer.start_as_current_span("GET /productos/{producto_id}") as request_span:
            created = await service.create(NewProducto(nombre="Teclado", precio=Decimal("9.99")))
            await service.get(created.id)
            await service.update(created.id, ProductoPatch({"stock": 3}))
            await service.delete(created.id)
            with pytest.raises(ProgrammingError):
                async with engine.connect() as connection:
                    await connection.execute(text("SELEC 1"))
        # Outside any recorded span: timed, but no span of its own.
        await service.list()
    finally:
        await engine.dispose()

    database = make_url(clean_postgres).database
    counts = operations(metrics)
    assert counts["INSERT"] == counts["UPDATE"] == counts["DELETE"] == 1
    assert counts["SELECT"] == 2 and counts["OTHER"] == 1

    request_id = request_span.get_span_context()
    spans = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert [(s.attributes or {}).get("db.operation.name") for s in spans] == [
        "INSERT",
        "SELECT",
        "UPDATE",
        "DELETE",
        "OTHER",
    ]
    for span in spans:
        attributes = span.attributes or {}
        assert span.parent is not None and span.parent.span_id == request_id.span_id
        assert span.context.trace_id == request_id.trace_id
        assert attributes["db.system.name"] == attributes["db.system"] == "postgresql"
        assert attributes["db.namespace"] == database
        assert "Teclado" not in str(attributes["db.query.text"])  # parameters, never values
    assert spans[0].name == f"INSERT {database}"
    assert not spans[-1].status.is_ok and (spans[-1].attributes or {}).get("error.type")
    # One measurement: each span's length is the observation recorded for it.
    span_total = sum((s.end_time or 0) - (s.start_time or 0) for s in spans) / 1e9
    histogram_total = sum(
        metrics.registry.get_sample_value(
            "db_client_operation_duration_seconds_sum",
            {"db_system_name": "postgresql", "db_operation_name": operation, "db_namespace": database},
        )
        or 0
        for operation in ("INSERT", "UPDATE", "DELETE", "OTHER")
    )
    select_spans = sum((s.end_time or 0) - (s.start_time or 0) for s in spans[1:2]) / 1e9
    assert span_total - select_spans == pytest.approx(histogram_total, abs=1e-6)


async def test_queries_under_a_sampled_out_request_make_no_span(clean_postgres: str) -> None:
    engine = create_engine(make_settings(clean_postgres))
    metrics = Metrics()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider, TraceContextTextMapPropagator())
    async with engine.connect():
        pass  # the dialect's own first queries: out of the counts
    instrument_engine(engine, metrics=metrics, tracing=tracing)
    service = ProductoService(PATHS[0][0](engine))
    sampled_out = NonRecordingSpan(SpanContext(trace_id=1, span_id=2, is_remote=False))
    try:
        with use_span(sampled_out):
            await service.list()
        with tracing.tracer.start_as_current_span("GET /productos"):
            await service.list()
    finally:
        await engine.dispose()
    assert operations(metrics)["SELECT"] == 2  # both timed
    assert [s.name for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT] == [
        f"SELECT {make_url(clean_postgres).database}"
    ]
