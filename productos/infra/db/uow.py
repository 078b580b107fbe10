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

from productos.domain.errors import ConflictError, DatabaseUnavailableError
from productos.infra.db.engine import TRANSACTIONAL_ISOLATION

_UNAVAILABLE = "database unavailable"

ConnectionT = TypeVar("ConnectionT")
UnitT = TypeVar("UnitT", bound="UnitOfWorkBase[Any]")


#: SQLSTATE classes that mean "the database cannot serve you now", not "your statement is wrong":
#: 08 connection exception, 28 invalid authorization (a refused login, e.g. mid-rotation), 53 insufficient
#: resources (too many connections), 57P operator intervention (shutdown, starting up), 58 system error.
_UNAVAILABLE_SQLSTATES = ("08", "28", "53", "57P", "58")


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
    if isinstance(exc, PoolTimeoutError | OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(driver, OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError):
        # InternalClientError: a connection its shutdown left unusable ("cannot switch to state 12").
        return True
    if isinstance(driver, asyncpg.PostgresConnectionError | asyncpg.QueryCanceledError):
        return True
    return _sqlstate(driver).startswith(_UNAVAILABLE_SQLSTATES)


def domain_error(exc: Exception) -> Exception | None:
    """The domain error a driver or pool error means, with a message safe for clients; ``None`` when it is
    none of them (a bug: let it propagate as it is)."""
    driver = _driver_error(exc)
    if isinstance(exc, IntegrityError) or isinstance(driver, asyncpg.IntegrityConstraintViolationError):
        return ConflictError("the change conflicts with stored data")
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
    """What every unit of work on an engine holds: its options, and the connection its repositories use."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        read_only: bool = False,
        autocommit: bool = False,
        acquire_timeout: float | None = None,
    ) -> None:
        self._engine = engine
        self._transactional = not (read_only or autocommit)
        self._acquire_timeout = acquire_timeout
        self._conn: ConnectionT | None = None

    @classmethod
    def factory(cls, engine: AsyncEngine, *, acquire_timeout: float | None = None) -> EngineUnitOfWorkFactory[Self]:
        """A ``UnitOfWorkFactory`` of this class on ``engine``: ``factory(read_only=True)`` makes a unit.

        Args:
            engine: the process' engine (``runtime.engine``).
            acquire_timeout: bound, in seconds, on getting a usable connection (pool wait, pre-ping, login);
                ``settings.db_pool_timeout`` is the runtime's.
        """
        return EngineUnitOfWorkFactory(cls, engine, acquire_timeout=acquire_timeout)

    def _bind(self, connection: ConnectionT) -> None:
        """Create this unit's repositories on ``connection``."""
        raise NotImplementedError


class EngineUnitOfWorkFactory(Generic[UnitT]):
    """``UnitOfWorkFactory``: units of one class on one engine, with one acquisition deadline."""

    __slots__ = ("acquire_timeout", "engine", "unit")

    def __init__(self, unit: type[UnitT], engine: AsyncEngine, *, acquire_timeout: float | None = None) -> None:
        self.unit = unit
        self.engine = engine
        self.acquire_timeout = acquire_timeout

    def __call__(self, *, read_only: bool = False, autocommit: bool = False) -> UnitT:
        return self.unit(self.engine, read_only=read_only, autocommit=autocommit, acquire_timeout=self.acquire_timeout)


class SqlAlchemyUnitOfWorkBase(UnitOfWorkBase[AsyncConnection]):
    """One connection (and, for writes, one transaction) from the engine's pool.

    Subclasses bind their repositories to the connection in ``_bind``. Read-only and ``autocommit`` units (a
    single write statement, atomic by itself) run in the pool's autocommit: one round trip per statement.
    Leaving without ``commit()`` rolls back.
    """

    async def __aenter__(self) -> Self:
        # One deadline over the pool wait, the pre-ping and a new connection's login: when the database hangs,
        # a request fails with 503 after ``acquire_timeout`` instead of after each of those timeouts in turn.
        async with translate_db_errors(), asyncio.timeout(self._acquire_timeout):
            conn = await self._engine.connect()
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
        elif self._transactional:
            # Pooled connections are in autocommit (see engine.POOL_ISOLATION); writes get a real transaction.
            # Setting the level costs no round trip; the pool restores autocommit when the connection returns.
            conn = await conn.execution_options(isolation_level=TRANSACTIONAL_ISOLATION[conn.dialect.name])
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
            async with translate_db_errors():
                if conn.in_transaction():
                    await conn.rollback()
        finally:
            await conn.close()

    async def commit(self) -> None:
        assert self._conn is not None, "commit() outside 'async with'"
        async with translate_db_errors():
            await self._conn.commit()

    async def rollback(self) -> None:
        assert self._conn is not None, "rollback() outside 'async with'"
        async with translate_db_errors():
            await self._conn.rollback()


class SqlAlchemyHealthProbe:
    """``HealthProbe``: a ``SELECT 1`` on a pooled connection, bounded by a timeout."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def ping(self, timeout: float) -> None:
        try:
            async with translate_db_errors(), asyncio.timeout(timeout), self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except TimeoutError as exc:
            raise DatabaseUnavailableError(_UNAVAILABLE) from exc
