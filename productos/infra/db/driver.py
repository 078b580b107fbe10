"""Statements straight on the pooled asyncpg connection: the hot path of PostgreSQL services.

SQLAlchemy keeps the pool (its size, timeout, recycling, idle pre-ping, the logins of rotating secrets and IAM
tokens, the pool metrics), the migrations and the embedded SQLite default. What a request runs, though, goes
to asyncpg directly, as SQL text that asyncpg prepares once per connection: SQLAlchemy Core's execution
(statement cache key, the greenlet bridge, result processing) cost about 250 µs of CPU per query here, more
than the rest of a request's database work together (``bench/README.md``).

- ``DriverConnection``: one connection checked out of the engine's pool. Each statement is timed for the
  engine's statement listeners (the same ``db.client.operation.duration`` and spans SQLAlchemy's dialect
  events feed), and its errors become domain errors as ``translate_db_errors`` makes them.
- A connection that fails in a way that leaves it unusable is invalidated on release, as SQLAlchemy does
  with its own: a lost server (connection errors, shutdown) invalidates every older pooled connection too, so
  after a failover the next checkouts reconnect instead of each failing once. Releasing never waits: an
  unusable connection is terminated (its socket closed at once), not closed gracefully, as a hung server
  would keep a graceful close waiting inside the request.
- ``DriverUnitOfWorkBase``: the unit of work on it, for any service's repositories.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self

import asyncpg
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from productos.domain.errors import DatabaseUnavailableError
from productos.infra.db.engine import engine_traits
from productos.infra.db.greenlets import run_in_greenlet
from productos.infra.db.replica import note_write
from productos.infra.db.uow import UnitOfWorkBase, domain_error

__all__ = [
    "DriverConnection",
    "DriverUnitOfWorkBase",
    "StatementListener",
    "add_statement_listener",
    "supports_driver_statements",
]

#: Called after every statement: its SQL, its duration in nanoseconds, and the error it raised (or ``None``).
StatementListener = Callable[[str, int, BaseException | None], None]

#: Where an engine keeps its listeners: in its own ``__dict__``, one lookup per checkout with no Python call (a
#: ``WeakKeyDictionary`` costs two), for as long as the engine lives.
_LISTENERS = "_productos_statement_listeners"

#: SQLSTATEs after which this server is gone for this session: 57P operator intervention (admin_shutdown,
#: crash_shutdown, cannot_connect_now, database_dropped, idle_session_timeout), and 25006 read_only_sql_transaction:
#: a write on a server that a failover has made a replica (Aurora's old writer), where the connections opened
#: before now all point.
_SERVER_GONE = ("57P", "25006")

_BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"


def add_statement_listener(engine: AsyncEngine | Engine, listener: StatementListener) -> None:
    """Have ``listener`` told of every statement that ``DriverConnection``s of ``engine`` run."""
    key = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    key.__dict__[_LISTENERS] = (*key.__dict__.get(_LISTENERS, ()), listener)


def supports_driver_statements(engine: AsyncEngine) -> bool:
    """Whether ``engine``'s connections are asyncpg connections (PostgreSQL through asyncpg)."""
    return engine_traits(engine).asyncpg


def _server_gone(exc: BaseException) -> bool:
    # InternalClientError: the server's goodbye (a FATAL 57P01 from a shutdown or pg_terminate_backend) reached
    # the connection while it was idle; asyncpg's protocol cannot take an error there and is left consuming
    # (state 2) until the socket's close is seen, so a statement in between fails with "cannot switch to state
    # 12; another operation (2) is in progress" (asyncpg/protocol/coreproto.pyx).
    if isinstance(
        exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError | asyncpg.InternalClientError | OSError
    ):
        return True
    return isinstance(exc, asyncpg.PostgresError) and str(exc.sqlstate).startswith(_SERVER_GONE)


def _connection_usable(exc: BaseException) -> bool:
    """Whether the connection is in a known state after ``exc``: a statement the server refused leaves it
    so; a timeout or a cancellation in mid-statement does not (its reply may still be on the way)."""
    return isinstance(exc, asyncpg.PostgresError) and not _server_gone(exc)


class DriverConnection:
    """One asyncpg connection checked out of an engine's pool; release it with ``release()``.

    ``fetch``, ``fetchrow``, ``fetchval`` and ``execute`` take asyncpg's SQL (``$1`` parameters) and raise
    domain errors: ``ConflictError`` for an integrity violation, ``DatabaseUnavailableError`` when the
    database cannot serve. Other errors (a bug in the SQL) propagate as asyncpg raised them.
    """

    __slots__ = ("_failure", "_listeners", "_pooled", "driver")

    def __init__(self, pooled: PoolProxiedConnection, listeners: Sequence[StatementListener]) -> None:
        self._pooled = pooled
        self._listeners = tuple(listeners)
        self._failure: BaseException | None = None
        #: The asyncpg connection, for what these methods do not cover (``copy_records_to_table``...);
        #: statements run on it directly are neither timed nor translated.
        dbapi = pooled.dbapi_connection
        assert dbapi is not None, "a connection checked out of the pool"
        # The adapter's own driver_connection: pooled.driver_connection reaches it through two more properties.
        self.driver: asyncpg.Connection = dbapi.driver_connection

    @classmethod
    async def checkout(cls, engine: AsyncEngine, *, timeout: float | None = None) -> DriverConnection:
        """A connection from ``engine``'s pool, within ``timeout`` seconds (pool wait, pre-ping and login)."""
        sync = engine.sync_engine
        # On every request, so: translate_db_errors() inline (its context manager costs more than the try); the
        # pool's connect(), which is what engine.raw_connection() runs, two Python calls fewer, in a reused
        # greenlet (greenlet_spawn makes one per call: about 10 µs); and the deadline kept as asyncio.timeout()
        # keeps it (a timer that cancels the task, a cancellation of its own turned into TimeoutError), in four
        # calls where asyncio.timeout() makes eleven.
        expired: list[bool] = []
        timer = task = None
        cancelling = 0
        if timeout is not None:
            loop = asyncio.get_running_loop()
            task = asyncio.current_task(loop)
            if task is None:
                raise RuntimeError("DriverConnection.checkout() with a timeout must run inside a task")
            cancelling = task.cancelling()
            timer = loop.call_later(timeout, _expire, task, expired)
        try:
            pooled = await run_in_greenlet(sync.pool.connect)
        except BaseException as exc:
            error: BaseException = exc
            if timer is not None and task is not None:
                timer.cancel()
                # The deadline's own cancellation (not one someone else asked for meanwhile) is a timeout.
                if expired and task.uncancel() <= cancelling and type(exc) is asyncio.CancelledError:
                    error = TimeoutError()
                    error.__cause__ = exc
            if not isinstance(error, Exception):
                raise
            translated = domain_error(error)
            if translated is None:
                raise
            raise translated from error
        if timer is not None and task is not None:
            timer.cancel()
            if expired:
                task.uncancel()  # cancelled at the deadline, connected all the same: that cancellation is spent
        return cls(pooled, sync.__dict__.get(_LISTENERS, ()))

    async def fetch(self, statement: str, *args: Any) -> list[asyncpg.Record]:
        result: list[asyncpg.Record] = await self._run(self.driver.fetch, statement, args)
        return result

    async def fetchrow(self, statement: str, *args: Any) -> asyncpg.Record | None:
        result: asyncpg.Record | None = await self._run(self.driver.fetchrow, statement, args)
        return result

    async def fetchval(self, statement: str, *args: Any) -> Any:
        return await self._run(self.driver.fetchval, statement, args)

    async def execute(self, statement: str, *args: Any) -> str:
        """Run ``statement``; its status (``"UPDATE 1"``)."""
        result: str = await self._run(self.driver.execute, statement, args)
        return result

    @property
    def failed(self) -> bool:
        """Whether a failure left this connection unusable: it will be invalidated, not reused."""
        return self._failure is not None

    def in_transaction(self) -> bool:
        return bool(self.driver.is_in_transaction())

    async def release(self) -> None:
        """Return the connection to the pool; invalidate it first when a failure left it unusable (or left
        it inside a transaction). Awaits nothing: the request that releases never waits for the server."""
        pooled, failure = self._pooled, self._failure
        if failure is not None or self.driver.is_in_transaction():
            _invalidate(pooled, self.driver, failure)
            pooled.close()
        else:
            # No transaction is open on the server (asyncpg's record of the last ReadyForQuery says so), and
            # SQLAlchemy's adapter began none: every statement here went to asyncpg directly. The pool's
            # reset-on-return would roll back nothing; what Connection.close() tells it after its own rollback.
            pooled._close_special(transaction_reset=True)

    async def _run(self, method: Callable[..., Awaitable[Any]], statement: str, args: tuple[Any, ...]) -> Any:
        started = time.perf_counter_ns()
        try:
            result = await method(statement, *args)
        except BaseException as exc:
            error = self._failed(statement, started, exc)
            if error is exc:
                raise
            raise error from exc
        elapsed = time.perf_counter_ns() - started
        for listener in self._listeners:
            listener(statement, elapsed, None)
        return result

    def _failed(self, statement: str, started: int, exc: BaseException) -> BaseException:
        """A statement started at ``started`` (``perf_counter_ns``) raised ``exc``: note whether it left the
        connection unusable, tell the listeners, and return what to raise (``exc`` itself: re-raise it).

        ``DriverSqlConnection`` runs its statements on ``driver`` with this and the listeners inline: two
        coroutines fewer per statement, each of which costs a Python call again on every resumption."""
        elapsed = time.perf_counter_ns() - started
        # A connection the server has closed is gone, whatever the error said (a FATAL of any SQLSTATE).
        closed = self.driver.is_closed()
        if closed or not _connection_usable(exc):
            self._failure = exc
        for listener in self._listeners:
            listener(statement, elapsed, exc)
        if not isinstance(exc, Exception):
            return exc
        translated = domain_error(exc)
        if translated is None and closed:
            translated = DatabaseUnavailableError(reason=f"{type(exc).__name__}, connection closed")
        return exc if translated is None else translated


def _expire(task: asyncio.Task[Any], expired: list[bool]) -> None:
    """A checkout's deadline: cancel its task, as ``asyncio.timeout`` does, noting that the deadline did."""
    if not task.done():
        expired.append(True)
        task.cancel()


def _invalidate(pooled: PoolProxiedConnection, driver: asyncpg.Connection, failure: BaseException | None) -> None:
    """Take the connection out of the pool without awaiting: ``terminate()`` closes its socket now (sending
    PostgreSQL's Terminate message when it can), where asyncpg's graceful close would wait for a cancel request
    and the server's goodbye (``close(timeout=2)``). Outside SQLAlchemy's greenlet, its own close of the
    connection is asyncpg's ``terminate()`` too."""
    driver.terminate()
    if failure is not None and _server_gone(failure):
        # What SQLAlchemy does on a disconnect: connections opened before now are replaced on their next
        # checkout, as they very likely died with this one.
        pooled._pool._invalidate(pooled, failure)
    elif pooled.is_valid:
        pooled.invalidate(failure)


class DriverUnitOfWorkBase(UnitOfWorkBase[DriverConnection]):
    """One ``DriverConnection`` and, for writes, one transaction (READ COMMITTED).

    Subclasses bind their repositories to the connection in ``_bind``. Read-only units, and ``autocommit``
    ones (a unit that runs a single write statement, atomic by itself), run each statement on its own: one
    round trip, where a transaction adds a BEGIN and a COMMIT. Behind a transaction-mode pooler
    (``DB_POOLER=transaction``) they too run in a transaction, committed at their end. Leaving a transactional
    unit without ``commit()`` rolls back. With a replica, a read-only unit that cannot check a connection out of
    it reads from the primary; a statement that fails later fails the unit (``SqlUnitOfWork`` runs it again on
    the primary instead).
    """

    async def __aenter__(self) -> Self:
        conn = None
        replica = self._replica
        if replica is not None and replica.should_read():
            try:
                conn = await DriverConnection.checkout(replica.engine, timeout=self._acquire_timeout)
            except DatabaseUnavailableError as exc:
                self._replica_failed(replica, exc)
        if conn is None:
            conn = await DriverConnection.checkout(self._engine, timeout=self._acquire_timeout)
        if self._autocommit_writes:
            note_write()
        if self._begins:
            try:
                await conn.execute(_BEGIN)
            except BaseException:
                await conn.release()
                raise
        self._conn = conn
        self._bind(conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            # A connection that failed is invalidated by release(); the server rolls back when it goes.
            if conn._failure is None and conn.driver.is_in_transaction():
                await conn.execute("ROLLBACK" if self._transactional else "COMMIT")
        finally:
            await conn.release()

    async def commit(self) -> None:
        assert self._conn is not None, "commit() outside 'async with'"
        if not self._conn.driver.is_in_transaction():
            return
        if self._transactional:
            # Before the COMMIT: should its answer be lost, the write may have happened all the same.
            note_write()
        # PostgreSQL answers COMMIT in a transaction that a failed statement aborted with ROLLBACK, no error.
        if await self._conn.execute("COMMIT") != "COMMIT":
            raise RuntimeError("nothing was committed: a statement of this unit of work failed earlier")

    async def rollback(self) -> None:
        assert self._conn is not None, "rollback() outside 'async with'"
        if self._conn.driver.is_in_transaction():
            await self._conn.execute("ROLLBACK")
