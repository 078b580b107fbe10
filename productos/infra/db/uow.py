"""Generic SQLAlchemy pieces every productos service's repositories build on: error translation, the unit of
work's connection handling, and the health probe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Self

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from productos.domain.errors import ConflictError, DatabaseUnavailableError
from productos.infra.db.engine import TRANSACTIONAL_ISOLATION

_UNAVAILABLE = "database unavailable"


#: SQLSTATE classes that mean "the database cannot serve you now", not "your statement is wrong":
#: 08 connection exception, 28 invalid authorization (a refused login, e.g. mid-rotation), 53 insufficient
#: resources (too many connections), 57P operator intervention (shutdown, starting up), 58 system error.
_UNAVAILABLE_SQLSTATES = ("08", "28", "53", "57P", "58")


def _sqlstate(exc: DBAPIError) -> str:
    seen: BaseException | None = exc.orig
    while seen is not None:
        state = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(state, str):
            return state
        seen = seen.__cause__
    return ""


def _is_connectivity_error(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeoutError | OperationalError | InterfaceError | OSError | TimeoutError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    return exc.connection_invalidated or _sqlstate(exc).startswith(_UNAVAILABLE_SQLSTATES)


@asynccontextmanager
async def translate_db_errors() -> AsyncIterator[None]:
    """Map driver and pool errors onto domain errors, chained, with messages safe for clients."""
    try:
        yield
    except IntegrityError as exc:
        raise ConflictError("the change conflicts with stored data") from exc
    except (DBAPIError, PoolTimeoutError, OSError, TimeoutError) as exc:
        if _is_connectivity_error(exc):
            state = _sqlstate(exc) if isinstance(exc, DBAPIError) else ""
            reason = f"{type(exc.orig if isinstance(exc, DBAPIError) else exc).__name__} {state}".strip()
            raise DatabaseUnavailableError(_UNAVAILABLE, reason=reason) from exc
        raise


class SqlAlchemyUnitOfWorkBase:
    """One connection (and, for writes, one transaction) from the engine's pool.

    Subclasses bind their repositories to the connection in ``_bind``. Read-only units run in the pool's
    autocommit: one round trip per statement. Leaving without ``commit()`` rolls back.
    """

    def __init__(self, engine: AsyncEngine, *, read_only: bool = False, acquire_timeout: float | None = None) -> None:
        self._engine = engine
        self._read_only = read_only
        self._acquire_timeout = acquire_timeout
        self._conn: AsyncConnection | None = None

    def _bind(self, connection: AsyncConnection) -> None:
        """Create this unit's repositories on ``connection``."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        # One deadline over the pool wait, the pre-ping and a new connection's login: when the database hangs,
        # a request fails with 503 after ``acquire_timeout`` instead of after each of those timeouts in turn.
        async with translate_db_errors(), asyncio.timeout(self._acquire_timeout):
            conn = await self._engine.connect()
        if not self._read_only:
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
