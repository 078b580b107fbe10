"""SQLAlchemy Core repository and unit of work, one implementation for PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Row, delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from productos.domain.errors import ConflictError, DatabaseUnavailableError, StaleVersionError
from productos.domain.models import NewProducto, Producto, ProductoPatch
from productos.infra.db.engine import TRANSACTIONAL_ISOLATION
from productos.infra.db.tables import productos_table as t

_UNAVAILABLE = "database unavailable"
_COLUMNS = (t.c.id, t.c.nombre, t.c.descripcion, t.c.precio, t.c.stock, t.c.created_at, t.c.updated_at, t.c.version)


def _is_connectivity_error(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeoutError | OperationalError | InterfaceError | OSError | TimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@asynccontextmanager
async def translate_db_errors() -> AsyncIterator[None]:
    """Map driver and pool errors onto domain errors, chained, with messages safe for clients."""
    try:
        yield
    except IntegrityError as exc:
        raise ConflictError("the change conflicts with stored data") from exc
    except (DBAPIError, PoolTimeoutError, OSError, TimeoutError) as exc:
        if _is_connectivity_error(exc):
            raise DatabaseUnavailableError(_UNAVAILABLE) from exc
        raise


def _to_producto(row: Row[Any]) -> Producto:
    return Producto(
        id=row.id,
        nombre=row.nombre,
        descripcion=row.descripcion,
        precio=row.precio,
        stock=row.stock,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
    )


class SqlAlchemyProductRepository:
    """``ProductRepository`` on one SQLAlchemy async connection (the unit of work's)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def get(self, producto_id: int) -> Producto | None:
        async with translate_db_errors():
            result = await self._conn.execute(select(*_COLUMNS).where(t.c.id == producto_id))
            row = result.first()
        return None if row is None else _to_producto(row)

    async def list(self, *, after: int = 0, limit: int = 100) -> Sequence[Producto]:
        # Keyset pagination: the primary-key index finds the start, so page 10,000 costs what page 1 costs.
        statement = select(*_COLUMNS).where(t.c.id > after).order_by(t.c.id).limit(limit)
        async with translate_db_errors():
            result = await self._conn.execute(statement)
            return [_to_producto(row) for row in result]

    async def add(self, producto: NewProducto) -> Producto:
        now = datetime.now(UTC)
        statement = (
            insert(t)
            .values(
                nombre=producto.nombre,
                descripcion=producto.descripcion,
                precio=producto.precio,
                stock=producto.stock,
                version=1,
                created_at=now,
                updated_at=now,
            )
            .returning(*_COLUMNS)
        )
        async with translate_db_errors():
            result = await self._conn.execute(statement)
            return _to_producto(result.one())

    async def update(
        self, producto_id: int, patch: ProductoPatch, *, expected_version: int | None = None
    ) -> Producto | None:
        # One UPDATE ... RETURNING: the row lock it takes makes concurrent patches apply one after the other,
        # so no read-modify-write in Python can lose a write.
        statement = (
            update(t)
            .where(t.c.id == producto_id)
            .values(**patch.changes, version=t.c.version + 1, updated_at=datetime.now(UTC))
            .returning(*_COLUMNS)
        )
        if expected_version is not None:
            statement = statement.where(t.c.version == expected_version)
        async with translate_db_errors():
            row = (await self._conn.execute(statement)).first()
            if row is None and expected_version is not None and await self._exists(producto_id):
                raise StaleVersionError(f"Producto {producto_id} was modified: version is not {expected_version}")
        return None if row is None else _to_producto(row)

    async def delete(self, producto_id: int, *, expected_version: int | None = None) -> bool:
        statement = delete(t).where(t.c.id == producto_id).returning(t.c.id)
        if expected_version is not None:
            statement = statement.where(t.c.version == expected_version)
        async with translate_db_errors():
            deleted = (await self._conn.execute(statement)).first() is not None
            if not deleted and expected_version is not None and await self._exists(producto_id):
                raise StaleVersionError(f"Producto {producto_id} was modified: version is not {expected_version}")
        return deleted

    async def _exists(self, producto_id: int) -> bool:
        result = await self._conn.execute(select(t.c.id).where(t.c.id == producto_id))
        return result.first() is not None


class SqlAlchemyUnitOfWork:
    """One connection and transaction from the engine's pool; read-only work runs in autocommit (one round trip
    per statement)."""

    productos: SqlAlchemyProductRepository

    def __init__(self, engine: AsyncEngine, *, read_only: bool = False, acquire_timeout: float | None = None) -> None:
        self._engine = engine
        self._read_only = read_only
        self._acquire_timeout = acquire_timeout
        self._conn: AsyncConnection | None = None

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
        self.productos = SqlAlchemyProductRepository(conn)
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


class SqlAlchemyUnitOfWorkFactory:
    """``UnitOfWorkFactory`` over one engine."""

    def __init__(self, engine: AsyncEngine, *, acquire_timeout: float | None = None) -> None:
        self.engine = engine
        self.acquire_timeout = acquire_timeout

    def __call__(self, *, read_only: bool = False) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(self.engine, read_only=read_only, acquire_timeout=self.acquire_timeout)


class SqlAlchemyHealthProbe:
    """``HealthProbe``: a ``SELECT 1`` on a pooled connection, bounded by a timeout."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def ping(self, timeout: float) -> None:
        try:
            async with translate_db_errors(), asyncio.timeout(timeout):
                async with self._engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except TimeoutError as exc:
            raise DatabaseUnavailableError(_UNAVAILABLE) from exc
