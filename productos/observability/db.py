"""Database instrumentation from SQLAlchemy's own events: query durations and spans, and the pool's state.

- ``db.client.operation.duration``, by system, operation (``SELECT``, ``INSERT``...) and database
  (``db.system.name``, ``db.operation.name``, ``db.namespace``): timed around the cursor's execute by the
  engine's dialect events (``do_execute``, ``do_execute_no_params``, ``do_executemany``: the handler runs the
  execute itself, as those events allow). The same measurement makes the query's span, a child of the
  request's, with the same attributes, ``db.system`` (the name before semantic conventions 1.30) and
  ``db.query.text`` (the statement with its placeholders, never the values). Not ``before_cursor_execute``/
  ``after_cursor_execute``: a connection-level listener on an engine makes SQLAlchemy join event dispatchers
  for every connection it hands out, which cost about 40 µs per request here (a request is about 1 ms); the
  dialect's events cost about 5 µs.
- ``db.client.connection.count`` by state: every pool event (``connect``, ``checkout``, ``checkin``,
  ``close``, ``invalidate``, ``detach``) moves its connection between *idle*, *used* and *gone*. Each
  connection remembers its state, so an event that repeats a state (``invalidate`` then ``close``) or one
  without a matching checkout (a checkout that failed) cannot make the counts drift.
- ``db.client.connection.pending_requests``, ``.wait_time`` and ``.timeouts``: timed around the pool's
  ``connect()``, which SQLAlchemy has no event for. The wait covers the queue, the pre-ping and the login of
  a new connection: all the time a caller waits for a usable connection. A caller is pending while it waits
  with no idle connection there for it (for one to be returned, or opened).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from opentelemetry.context import Context, get_current
from opentelemetry.trace import INVALID_SPAN, SpanKind, Status, StatusCode, set_span_in_context
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import Pool, QueuePool, StaticPool

from productos.infra.db.driver import add_statement_listener
from productos.observability.metrics import IDLE, USED, Metrics, PoolInstruments
from productos.observability.tracing import Tracing

#: Operation names kept as they are; any other statement is recorded as ``OTHER`` (bounded label values).
OPERATIONS = frozenset(
    {
        "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT",
        "RELEASE", "CREATE", "ALTER", "DROP", "TRUNCATE", "SET", "SHOW", "PRAGMA", "LOCK", "COPY", "VACUUM",
        "ANALYZE", "EXPLAIN",
    }
)  # fmt: skip
#: Failures to get a connection that count as timeouts. ``CancelledError`` is how our own deadline
#: (the unit of work's deadline on the acquisition, ``DriverConnection.checkout``'s or ``asyncio.timeout``) reaches
#: the pool.
_TIMEOUTS = (PoolTimeoutError, TimeoutError, asyncio.CancelledError)
_STATE = "productos.pool_state"
#: Where a context keeps its current span: what ``set_span_in_context`` writes and ``get_current_span`` reads. Read
#: here straight from the current context, 4 Python calls per statement where ``get_current_span`` makes 9.
(_SPAN_KEY,) = set_span_in_context(INVALID_SPAN, Context()).keys()
_SYSTEMS = {"postgresql": "postgresql", "sqlite": "sqlite", "mysql": "mysql", "mssql": "microsoft.sql_server"}


def operation_name(statement: str, cache: dict[str, str] | None = None) -> str:
    """The statement's first keyword, upper-case, if it is a known operation; else ``OTHER``."""
    if cache is not None:
        found = cache.get(statement)
        if found is not None:
            return found
    head = statement.lstrip(" \t\r\n(")[:16].split(None, 1)
    name = head[0].upper() if head else ""
    name = name if name in OPERATIONS else "OTHER"
    if cache is not None and len(cache) < 4096:  # compiled statements are few; literal SQL could be many
        cache[statement] = name
    return name


class _StatementTimer:
    """The dialect's ``do_execute*`` events of one engine: each runs the statement, timed."""

    def __init__(
        self,
        dialect: Any,
        metrics: Metrics | None,
        tracing: Tracing | None,
        system: str,
        namespace: str | None,
    ) -> None:
        self.dialect = dialect
        self.metrics = metrics
        # A provider without an exporter samples every span out (tracing.recording): a query span could never
        # be recorded, so the current span need not even be asked.
        self.tracer = tracing.tracer if tracing is not None and tracing.recording else None
        self.system = system
        self.namespace = namespace
        self.operations: dict[str, str] = {}

    def execute(self, cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        started = time.perf_counter_ns()
        try:
            self.dialect.do_execute(cursor, statement, parameters, context)
        except BaseException as exc:
            self.record(statement, time.perf_counter_ns() - started, exc)
            raise
        self.record(statement, time.perf_counter_ns() - started, None)
        return True  # executed: SQLAlchemy does not execute it again

    def execute_no_params(self, cursor: Any, statement: str, context: Any) -> bool:
        started = time.perf_counter_ns()
        try:
            self.dialect.do_execute_no_params(cursor, statement, context)
        except BaseException as exc:
            self.record(statement, time.perf_counter_ns() - started, exc)
            raise
        self.record(statement, time.perf_counter_ns() - started, None)
        return True

    def executemany(self, cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        started = time.perf_counter_ns()
        try:
            self.dialect.do_executemany(cursor, statement, parameters, context)
        except BaseException as exc:
            self.record(statement, time.perf_counter_ns() - started, exc)
            raise
        self.record(statement, time.perf_counter_ns() - started, None)
        return True

    def record(self, statement: str, elapsed_ns: int, error: BaseException | None) -> None:
        """One statement's duration and outcome, as a metric and a span; also called for the statements run on
        the driver connection (``productos.infra.db.driver``), which no SQLAlchemy event sees."""
        operation = self.operations.get(statement) or operation_name(statement, self.operations)
        if self.metrics is not None:
            self.metrics.operation(self.system, operation, elapsed_ns / 1e9, self.namespace)
        if self.tracer is None:
            return
        current: Any = get_current().get(_SPAN_KEY)
        if current is None or not current.is_recording():
            return  # no request's span, or it is sampled out: its queries' spans would be dropped too
        end = time.time_ns()
        attributes = {
            "db.system.name": self.system,
            # The name before semantic conventions 1.30, which X-Ray and many backends still read.
            "db.system": self.system,
            "db.operation.name": operation,
            "db.query.text": statement,
        }
        if self.namespace:
            attributes["db.namespace"] = self.namespace
        name = f"{operation} {self.namespace}" if self.namespace else operation
        span = self.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes, start_time=end - elapsed_ns)
        if error is not None:
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end)


class _PoolListener:
    """Pool events → connection counts by state; each connection's state kept in its ``record_info``."""

    def __init__(self, instruments: PoolInstruments) -> None:
        self.instruments = instruments

    def _move(self, record: Any, new: str | None) -> None:
        info = record.record_info
        old = info.get(_STATE)
        if old != new:
            self.instruments.moved(old, new)
            info[_STATE] = new

    def connect(self, dbapi_connection: Any, record: Any) -> None:
        self._move(record, USED)  # a queue pool opens a connection for the caller that is checking one out

    # checkout and checkin run on every request: _move inline.

    def checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        info = record.record_info
        old = info.get(_STATE)
        if old != USED:
            self.instruments.moved(old, USED)
            info[_STATE] = USED

    def checkin(self, dbapi_connection: Any, record: Any) -> None:
        new = IDLE if dbapi_connection is not None else None
        info = record.record_info
        old = info.get(_STATE)
        if old != new:
            self.instruments.moved(old, new)
            info[_STATE] = new

    def gone(self, dbapi_connection: Any, record: Any, *args: Any) -> None:
        self._move(record, None)


def _capacity(pool: Pool) -> int | None:
    if isinstance(pool, QueuePool):
        overflow = getattr(pool, "_max_overflow", 0)  # no public accessor; -1 means unbounded
        return None if overflow < 0 else pool.size() + overflow
    if isinstance(pool, StaticPool):
        return 1
    return None


def _time_acquisitions(pool: Pool, instruments: PoolInstruments) -> None:
    """Time ``pool.connect()``. The pool's class is swapped for a subclass, so the timing survives
    ``engine.dispose()``, whose ``recreate()`` builds the new pool from ``self.__class__``."""
    base = type(pool)
    queued = issubclass(base, QueuePool)

    class TimedPool(base):  # type: ignore[valid-type, misc]
        def connect(self) -> Any:
            # Pending: a caller for whom no idle connection was there, waiting for one to come back or open.
            # (QueuePool.checkedin() is its queue's qsize(), asked here directly: this runs on every request.)
            pending = not (queued and self._pool.qsize())
            if pending:
                instruments.pending(1)
            started = time.perf_counter_ns()
            try:
                return super().connect()
            except _TIMEOUTS:
                instruments.timed_out()
                raise
            finally:
                if pending:
                    instruments.pending(-1)
                instruments.waited((time.perf_counter_ns() - started) / 1e9)

    TimedPool.__name__ = TimedPool.__qualname__ = f"Timed{base.__name__}"
    pool.__class__ = TimedPool


def instrument_engine(
    engine: AsyncEngine | Engine,
    *,
    metrics: Metrics | None,
    tracing: Tracing | None,
    pool_name: str | None = None,
) -> None:
    """Record ``engine``'s queries and pool to ``metrics`` and its queries as spans to ``tracing``.

    Args:
        engine: the engine, before or after it has opened connections (instrument it before, for exact
            pool counts: a connection opened earlier is counted from its next checkout on).
        metrics: the process' instruments; ``None`` records no metric.
        tracing: the process' tracing; ``None`` makes no span.
        pool_name: ``db.client.connection.pool.name``; by default the database's name.
    """
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    if getattr(sync_engine, "_productos_instrumented", False):
        return
    sync_engine._productos_instrumented = True  # type: ignore[attr-defined]
    system = _SYSTEMS.get(sync_engine.dialect.name, sync_engine.dialect.name)
    namespace = sync_engine.url.database or None
    if metrics is None and tracing is None:
        return
    timer = _StatementTimer(sync_engine.dialect, metrics, tracing, system, namespace)
    # Registered last: a listener of the application's that executes the statement itself still comes first.
    event.listen(sync_engine, "do_execute", timer.execute)
    event.listen(sync_engine, "do_execute_no_params", timer.execute_no_params)
    event.listen(sync_engine, "do_executemany", timer.executemany)
    add_statement_listener(sync_engine, timer.record)
    if metrics is None:
        return
    pool = sync_engine.pool
    instruments = metrics.pool(pool_name or namespace or system)
    listener = _PoolListener(instruments)
    event.listen(pool, "connect", listener.connect)
    event.listen(pool, "checkout", listener.checkout)
    event.listen(pool, "checkin", listener.checkin)
    for name in ("close", "invalidate", "detach"):
        event.listen(pool, name, listener.gone)
    capacity = _capacity(pool)
    if capacity is not None:
        instruments.capacity(capacity)
    _time_acquisitions(pool, instruments)
