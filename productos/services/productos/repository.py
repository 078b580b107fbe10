"""SQLAlchemy Core repository and unit of work, one implementation for PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from productos.db import SqlAlchemyUnitOfWorkBase, translate_db_errors
from productos.domain import StaleVersionError
from productos.services.productos.domain import NewProducto, Producto, ProductoPatch
from productos.services.productos.tables import productos_table as t

__all__ = ["SqlAlchemyProductoRepository", "SqlAlchemyUnitOfWork", "SqlAlchemyUnitOfWorkFactory"]
_COLUMNS = (
    t.c.id,
    t.c.nombre,
    t.c.descripcion,
    t.c.precio,
    t.c.stock,
    t.c.created_at,
    t.c.updated_at,
    t.c.version,
)


def _to_producto(row: Row[Any] | Any) -> Producto:
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


class SqlAlchemyProductoRepository:
    """``ProductoRepository`` on one SQLAlchemy async connection (the unit of work's)."""

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


class SqlAlchemyUnitOfWork(SqlAlchemyUnitOfWorkBase):
    """The products unit of work: ``productos`` is the repository on this unit's connection."""

    productos: SqlAlchemyProductoRepository

    def _bind(self, connection: AsyncConnection) -> None:
        self.productos = SqlAlchemyProductoRepository(connection)


class SqlAlchemyUnitOfWorkFactory:
    """``UnitOfWorkFactory`` over one engine."""

    def __init__(self, engine: AsyncEngine, *, acquire_timeout: float | None = None) -> None:
        self.engine = engine
        self.acquire_timeout = acquire_timeout

    def __call__(self, *, read_only: bool = False, autocommit: bool = False) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(
            self.engine, read_only=read_only, autocommit=autocommit, acquire_timeout=self.acquire_timeout
        )
