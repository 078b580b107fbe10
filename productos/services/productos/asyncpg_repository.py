"""The products repository on PostgreSQL, as SQL run on the pooled asyncpg connection (``driver.py``).

The same contract as the SQLAlchemy Core repository (``tests/contract`` runs both): keyset pages, writes that
are each one atomic statement, versions for optimistic concurrency. The schema is the migrations'.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from productos.db import DriverConnection, DriverUnitOfWorkBase
from productos.domain import StaleVersionError
from productos.services.productos.domain import NewProducto, Producto, ProductoPatch

__all__ = ["AsyncpgProductoRepository", "AsyncpgUnitOfWork", "AsyncpgUnitOfWorkFactory"]

_RETURNING = "RETURNING id, nombre, descripcion, precio, stock, created_at, updated_at, version"
_GET = "SELECT id, nombre, descripcion, precio, stock, created_at, updated_at, version FROM productos WHERE id = $1"
_EXISTS = "SELECT 1 FROM productos WHERE id = $1"
# Keyset pagination: the primary-key index finds the start, so page 10,000 costs what page 1 costs.
_PAGE = (
    "SELECT id, nombre, descripcion, precio, stock, created_at, updated_at, version FROM productos "
    "WHERE id > $1 ORDER BY id LIMIT $2"
)
_INSERT = (
    "INSERT INTO productos (nombre, descripcion, precio, stock, version, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, 1, $5, $5) " + _RETURNING
)
_DELETE = "DELETE FROM productos WHERE id = $1 RETURNING id"
_DELETE_VERSION = "DELETE FROM productos WHERE id = $1 AND version = $2 RETURNING id"
#: The columns a patch may set, in the order their parameters take in an UPDATE.
_PATCHABLE = ("nombre", "descripcion", "precio", "stock")


def _update_statement(fields: tuple[str, ...], versioned: bool) -> str:
    """``UPDATE ... RETURNING`` setting ``fields`` ($3...), the version and ``updated_at`` ($2) of row $1."""
    sets = [f"{name} = ${position}" for position, name in enumerate(fields, start=3)]
    sets += ["version = version + 1", "updated_at = $2"]
    where = "id = $1" + (f" AND version = ${len(fields) + 3}" if versioned else "")
    # Column names from _PATCHABLE only; every value is a parameter.
    return f"UPDATE productos SET {', '.join(sets)} WHERE {where} {_RETURNING}"  # noqa: S608


#: One statement per combination of patched fields, built once: 2^4 * 2 strings at most.
_UPDATES: dict[tuple[tuple[str, ...], bool], str] = {}


def _to_producto(row: asyncpg.Record) -> Producto:
    return Producto(
        id=row[0],
        nombre=row[1],
        descripcion=row[2],
        precio=row[3],
        stock=row[4],
        created_at=row[5],
        updated_at=row[6],
        version=row[7],
    )


class AsyncpgProductoRepository:
    """``ProductoRepository`` on one ``DriverConnection`` (the unit of work's)."""

    def __init__(self, connection: DriverConnection) -> None:
        self._conn = connection

    async def get(self, producto_id: int) -> Producto | None:
        row = await self._conn.fetchrow(_GET, producto_id)
        return None if row is None else _to_producto(row)

    async def list(self, *, after: int = 0, limit: int = 100) -> Sequence[Producto]:
        return [_to_producto(row) for row in await self._conn.fetch(_PAGE, after, limit)]

    async def add(self, producto: NewProducto) -> Producto:
        now = datetime.now(UTC)
        row = await self._conn.fetchrow(
            _INSERT, producto.nombre, producto.descripcion, producto.precio, producto.stock, now
        )
        assert row is not None  # INSERT ... RETURNING returns the row
        return _to_producto(row)

    async def update(
        self, producto_id: int, patch: ProductoPatch, *, expected_version: int | None = None
    ) -> Producto | None:
        # One UPDATE ... RETURNING: the row lock it takes makes concurrent patches apply one after the other,
        # so no read-modify-write in Python can lose a write.
        changes = patch.changes
        fields = tuple(name for name in _PATCHABLE if name in changes)
        versioned = expected_version is not None
        statement = _UPDATES.get((fields, versioned))
        if statement is None:
            statement = _UPDATES.setdefault((fields, versioned), _update_statement(fields, versioned))
        args = [producto_id, datetime.now(UTC), *(changes[name] for name in fields)]
        if versioned:
            args.append(expected_version)
        row = await self._conn.fetchrow(statement, *args)
        if row is None and versioned and await self._exists(producto_id):
            raise StaleVersionError(f"Producto {producto_id} was modified: version is not {expected_version}")
        return None if row is None else _to_producto(row)

    async def delete(self, producto_id: int, *, expected_version: int | None = None) -> bool:
        if expected_version is None:
            return await self._conn.fetchrow(_DELETE, producto_id) is not None
        if await self._conn.fetchrow(_DELETE_VERSION, producto_id, expected_version) is not None:
            return True
        if await self._exists(producto_id):
            raise StaleVersionError(f"Producto {producto_id} was modified: version is not {expected_version}")
        return False

    async def _exists(self, producto_id: int) -> bool:
        return await self._conn.fetchrow(_EXISTS, producto_id) is not None


class AsyncpgUnitOfWork(DriverUnitOfWorkBase):
    """The products unit of work on PostgreSQL: ``productos`` is the repository on this unit's connection."""

    productos: AsyncpgProductoRepository

    def _bind(self, connection: DriverConnection) -> None:
        self.productos = AsyncpgProductoRepository(connection)


class AsyncpgUnitOfWorkFactory:
    """``UnitOfWorkFactory`` over one PostgreSQL engine (asyncpg)."""

    def __init__(self, engine: AsyncEngine, *, acquire_timeout: float | None = None) -> None:
        self.engine = engine
        self.acquire_timeout = acquire_timeout

    def __call__(self, *, read_only: bool = False, autocommit: bool = False) -> AsyncpgUnitOfWork:
        return AsyncpgUnitOfWork(
            self.engine, read_only=read_only, autocommit=autocommit, acquire_timeout=self.acquire_timeout
        )
