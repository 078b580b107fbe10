"""Generic SQLAlchemy pieces every productos service's repositories build on: error translation, the unit of
work's connection handling, and the health probe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from productos.domain.errors import ConcurrentUpdateError, ConflictError, DatabaseUnavailableError
from productos.infra.db.engine import TRANSACTIONAL_ISOLATION, engine_traits
from productos.infra.db.replica import ReadReplica, note_write

_UNAVAILABLE = "database unavailable"
_CONCURRENT = "the resource is being changed by another request: retry"

ConnectionT = TypeVar("ConnectionT")
UnitT = TypeVar("UnitT", bound="UnitOfWorkBase[Any]")


#: SQLSTATEs, and classes of them, that mean "the database cannot serve you now", not "your statement is
#: wrong": 08 connection exception; 28 invalid authorization (a refused login, e.g. mid-rotation); 3D000
#: invalid_catalog_name (the login's database does not exist); 53 insufficient resources (too many
#: connections, disk full, out of memory); 57 operator intervention (statement_timeout's query_canceled,
#: shutdown, starting up, database dropped); 58 system error (I/O); F0 configuration file error; XX internal
#: error (data or index corrupted); 25006 read_only_sql_transaction (a write on a server a failover made a
#: replica).
UNAVAILABLE_SQLSTATES = ("08", "28", "3D000", "53", "57", "58", "F0", "XX", "25006")

#: SQLSTATEs that mean a concurrent change was in the way, and a retry may succeed: 40 transaction rollback
#: (serialization failure, deadlock detected), 55P03 lock_not_available (lock_timeout).
CONCURRENT_SQLSTATES = ("40", "55P03")

#: asyncpg's errors that say a call was wrong, not that the connection failed (InterfaceError's others do).
_USAGE_ERRORS = (
    asyncpg.exceptions.ClientConfigurationError,
    asyncpg.exceptions.UnsupportedClientFeatureError,
    asyncpg.exceptions.UnsupportedServerFeatureError,
)

#: The driver's own errors, which say what happened (its SQLSTATE, a refused socket).
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's exception behind SQLAlchemy's wrappers: ``DBAPIError.orig``, or the cause that the dialect's
    PEP 249 adapters chain (a pool checkout raises those as they are, unwrapped)."""
    seen: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    while not isinstance(seen, _DRIVER_ERRORS) and seen.__cause__ is not None:
        seen = seen.__cause__
    return seen


def _sqlstate(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return state if isinstance(state, str) else ""


def _is_connectivity_error(exc: BaseException, driver: BaseException) -> bool:
    if isinstance(driver, _USAGE_ERRORS):
        return False
    if isinstance(exc, PoolTimeoutError | OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(driver, OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError):
        # InterfaceError: "connection is closed", "another operation is in progress". InternalClientError: a
        # connection the server's goodbye left unusable ("cannot switch to state 12"; see driver._server_gone).
        return True
    if isinstance(driver, asyncpg.PostgresConnectionError):
        return True
    return _sqlstate(driver).startswith(UNAVAILABLE_SQLSTATES)


def error_sqlstate(exc: BaseException) -> str:
    """The SQLSTATE of the driver's error behind ``exc`` (a domain error chains it), or ``""``."""
    seen: BaseException | None = exc
    while seen is not None:
        state = _sqlstate(seen)
        if state:
            return state
        seen = seen.orig if isinstance(seen, DBAPIError) and seen.orig is not None else seen.__cause__
    return ""


def domain_error(exc: Exception) -> Exception | None:
    """The domain error a driver or pool error means, with a message safe for clients; ``None`` when it is
    none of them (a bug: let it propagate as it is).

    ``ConflictError`` for an integrity violation; ``ConcurrentUpdateError`` when a concurrent change was in
    the way (lock timeout, deadlock, serialization failure); ``DatabaseUnavailableError`` for every failure of
    the connection or of the server (``UNAVAILABLE_SQLSTATES``, a refused or lost socket, a timeout, a broken
    connection, the pool's timeout).
    """
    driver = _driver_error(exc)
    if isinstance(exc, IntegrityError) or isinstance(driver, asyncpg.IntegrityConstraintViolationError):
        return ConflictError("the change conflicts with stored data")
    if _sqlstate(driver).startswith(CONCURRENT_SQLSTATES):
        return ConcurrentUpdateError(_CONCURRENT)
    if not _is_connectivity_error(exc, driver):
        return None
    reason = f"{type(driver).__name__} {_sqlstate(driver)}".strip()
    return DatabaseUnavailableError(_UNAVAILABLE, reason=reason)


@asynccontextmanager
async def translate_db_errors() -> AsyncIterator[None]:
    """Map driver and pool errors onto domain errors, chained, with messages safe for clients."""
    try:
        yield
    except Exception as exc:
        translated = domain_error(exc)
        if translated is None:
            raise
        raise translated from exc


class UnitOfWorkBase(Generic[ConnectionT]):
    """What every unit of work on an engine holds: its options, and the connection its repositories use.

    With a ``replica`` (``DATABASE_READ_URL``: see ``productos.infra.db.replica``), a read-only unit reads from it
    when it is connected, within ``DB_READ_MAX_LAG``, and nothing was written earlier in the request; otherwise,
    and when checking a connection out of the replica fails, from ``engine``, the primary.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        read_only: bool = False,
        autocommit: bool = False,
        acquire_timeout: float | None = None,
        replica: ReadReplica | None = None,
    ) -> None:
        self._engine = engine
        self._transactional = not (read_only or autocommit)
        #: A unit that writes in autocommit: each statement is committed as it runs.
        self._autocommit_writes = autocommit and not read_only
        #: Where a read-only unit may read instead of ``engine``.
        self._replica = replica if read_only else None
        #: Whether the unit runs in a transaction: writes always; every unit behind a transaction-mode pooler,
        #: where the session limits exist only inside one (``SET LOCAL``) and each statement of a unit would
        #: otherwise be free to reach another server connection. Such a unit, read-only or autocommit, commits
        #: at its end whatever happened: what it ran stays, as it would have in autocommit.
        traits = engine_traits(engine)
        self._begins = self._transactional or traits.behind_pooler
        #: ``engine``'s traits, looked up once per unit.
        self._traits = traits
        self._acquire_timeout = acquire_timeout
        self._conn: ConnectionT | None = None

    @classmethod
    def factory(
        cls,
        engine: AsyncEngine,
        *,
        acquire_timeout: float | None = None,
        replica: ReadReplica | None = None,
    ) -> EngineUnitOfWorkFactory[Self]:
        """A ``UnitOfWorkFactory`` of this class on ``engine``: ``factory(read_only=True)`` makes a unit.

        Args:
            engine: the process' engine (``runtime.engine``), the primary.
            acquire_timeout: bound, in seconds, on getting a usable connection (pool wait, pre-ping, login);
                ``settings.db_pool_timeout`` is the runtime's.
            replica: the read replica (``runtime.replica``, ``None`` without ``DATABASE_READ_URL``): the
                factory's read-only units read from it while it is connected and within ``DB_READ_MAX_LAG``,
                until the request writes.
        """
        return EngineUnitOfWorkFactory(cls, engine, acquire_timeout=acquire_timeout, replica=replica)

    def _replica_failed(self, replica: ReadReplica, error: DatabaseUnavailableError) -> None:
        """Checking a connection out of the replica failed: this unit reads from the primary, and so do the next
        ones until a sample finds the replica again."""
        replica.unreachable(error.reason)

    def _bind(self, connection: ConnectionT) -> None:
        """Create this unit's repositories on ``connection``."""
        raise NotImplementedError


class EngineUnitOfWorkFactory(Generic[UnitT]):
    """``UnitOfWorkFactory``: units of one class on one engine, with one acquisition deadline; with a ``replica``,
    its read-only units read from the replica while it serves reads (``ReadReplica.should_read``)."""

    __slots__ = ("acquire_timeout", "engine", "replica", "unit")

    def __init__(
        self,
        unit: type[UnitT],
        engine: AsyncEngine,
        *,
        acquire_timeout: float | None = None,
        replica: ReadReplica | None = None,
    ) -> None:
        self.unit = unit
        self.engine = engine
        self.acquire_timeout = acquire_timeout
        self.replica = replica

    def __call__(self, *, read_only: bool = False, autocommit: bool = False) -> UnitT:
        if read_only and self.replica is not None:
            return self.unit(
                self.engine, read_only=True, autocommit=autocommit, acquire_timeout=self.acquire_timeout,
                replica=self.replica,
            )  # fmt: skip
        return self.unit(self.engine, read_only=read_only, autocommit=autocommit, acquire_timeout=self.acquire_timeout)


class SqlAlchemyUnitOfWorkBase(UnitOfWorkBase[AsyncConnection]):
    """One connection (and, for writes, one transaction) from the engine's pool.

    Subclasses bind their repositories to the connection in ``_bind``. Read-only and ``autocommit`` units (a
    single write statement, atomic by itself) run in the pool's autocommit: one round trip per statement; behind
    a transaction-mode pooler (``DB_POOLER=transaction``) in a transaction that they commit at their end.
    Leaving a transactional unit without ``commit()`` rolls back. With a replica, a read-only unit that cannot
    check a connection out of it reads from the primary; a statement that fails later fails the unit.
    """

    async def __aenter__(self) -> Self:
        conn = None
        replica = self._replica
        if replica is not None and replica.should_read():
            try:
                conn = await self._open_connection(replica.engine)
            except DatabaseUnavailableError as exc:
                self._replica_failed(replica, exc)
        if conn is None:
            conn = await self._open_connection(self._engine)
        if self._autocommit_writes:
            note_write()
        if self._transactional and conn.dialect.name == "sqlite":
            # The sqlite3 module's own transactions begin at the first write, so a unit's reads would run
            # outside them and two read-then-write units could both read the old row (SQLite has no
            # FOR UPDATE). BEGIN IMMEDIATE takes the write lock first: writers run one after the other.
            try:
                async with translate_db_errors():
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                await conn.close()
                raise
        elif self._begins:
            # Pooled connections are in autocommit (see engine.POOL_ISOLATION); writes get a real transaction.
            # Setting the level costs no round trip; the pool restores autocommit when the connection returns.
            conn = await conn.execution_options(isolation_level=TRANSACTIONAL_ISOLATION[conn.dialect.name])
        self._conn = conn
        self._bind(conn)
        return self

    async def _open_connection(self, engine: AsyncEngine) -> AsyncConnection:
        # One deadline over the pool wait, the pre-ping and a new connection's login: when the database hangs,
        # a request fails with 503 after ``acquire_timeout`` instead of after each of those timeouts in turn.
        async with translate_db_errors(), asyncio.timeout(self._acquire_timeout):
            return await engine.connect()

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
            async with translate_db_errors():
                if conn.in_transaction():
                    await (conn.rollback() if self._transactional else conn.commit())
        finally:
            await conn.close()

    async def commit(self) -> None:
        assert self._conn is not None, "commit() outside 'async with'"
        if self._transactional:
            # Before the COMMIT: should its answer be lost, the write may have happened all the same.
            note_write()
        async with translate_db_errors():
            await self._conn.commit()

    async def rollback(self) -> None:
        assert self._conn is not None, "rollback() outside 'async with'"
        async with translate_db_errors():
            await self._conn.rollback()


class SqlAlchemyHealthProbe:
    """``HealthProbe``: a ``SELECT 1`` on a pooled connection, answered within the timeout whatever happens.

    The probe runs as a task of its own. At the deadline it is cancelled and left to finish in the background:
    what a cancelled checkout or statement does next (invalidating its connection, closing it) never delays
    the answer the ALB is waiting for.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        #: Probes abandoned at their deadline, still cleaning up: referenced until they end.
        self._abandoned: set[asyncio.Task[None]] = set()

    async def ping(self, timeout: float) -> None:
        probe = asyncio.ensure_future(self._select_one())
        try:
            done, _ = await asyncio.wait((probe,), timeout=timeout)
        except BaseException:
            self._abandon(probe)
            raise
        if not done:
            self._abandon(probe)
            raise DatabaseUnavailableError(_UNAVAILABLE, reason=f"no answer within {timeout} s")
        try:
            probe.result()
        except TimeoutError as exc:
            raise DatabaseUnavailableError(_UNAVAILABLE, reason="TimeoutError") from exc

    async def _select_one(self) -> None:
        async with translate_db_errors(), self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    def _abandon(self, probe: asyncio.Task[None]) -> None:
        probe.cancel()
        self._abandoned.add(probe)
        probe.add_done_callback(self._forget)

    def _forget(self, probe: asyncio.Task[None]) -> None:
        self._abandoned.discard(probe)
        if not probe.cancelled():
            probe.exception()  # retrieved: an abandoned probe's failure is no one's to report
