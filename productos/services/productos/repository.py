"""The products repository: SQLAlchemy Core statements, declared once, with bind parameters for every value.

On PostgreSQL productos compiles each statement once and runs it on the pooled asyncpg connection; on the
embedded SQLite default SQLAlchemy runs it. Every write is one atomic statement (``UPDATE ... RETURNING``,
``DELETE ... RETURNING``), so concurrent writers are ordered by the row lock and no read-modify-write happens
in Python; ``expected_version`` makes a write conditional (optimistic concurrency).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.sql.base import Executable

from productos.db import SqlConnection, SqlUnitOfWork
from productos.domain import StaleVersionError
from productos.services.productos.domain import NewProducto, Producto, ProductoPatch
from productos.services.productos.tables import productos_table as t

__all__ = ["SqlProductoRepository", "SqlProductosUnitOfWork"]

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
#: The columns a patch may set, in a fixed order (one statement shape per set of them).
_PATCHABLE = ("nombre", "descripcion", "precio", "stock")

_GET = select(*_COLUMNS).where(t.c.id == bindparam("id"))
_EXISTS = select(t.c.id).where(t.c.id == bindparam("id"))
# Keyset pagination: the primary-key index finds the start, so page 10,000 costs what page 1 costs.
_PAGE = select(*_COLUMNS).where(t.c.id > bindparam("after")).order_by(t.c.id).limit(bindparam("limit"))
_INSERT = (
    insert(t)
    .values(
        # Bind names differ from the columns': SQLAlchemy reserves a column's own name in VALUES and SET.
        nombre=bindparam("v_nombre"),
        descripcion=bindparam("v_descripcion"),
        precio=bindparam("v_precio"),
        stock=bindparam("v_stock"),
        version=1,
        created_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
    .returning(*_COLUMNS)
)


@functools.cache
def _update(fields: tuple[str, ...], versioned: bool) -> Executable:
    """``UPDATE ... RETURNING`` of ``fields``, the version and ``updated_at``: one statement per shape, built
    once (at most 2⁴ x 2)."""
    statement = (
        update(t)
        .where(t.c.id == bindparam("key"))
        .values({name: bindparam(f"v_{name}") for name in fields})
        .values(version=t.c.version + 1, updated_at=bindparam("now"))
        .returning(*_COLUMNS)
    )
    return statement.where(t.c.version == bindparam("expected")) if versioned else statement


@functools.cache
def _delete(versioned: bool) -> Executable:
    statement = delete(t).where(t.c.id == bindparam("id")).returning(t.c.id)
    return statement.where(t.c.version == bindparam("expected")) if versioned else statement


def _to_producto(row: Any) -> Producto:
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


class SqlProductoRepository:
    """``ProductoRepository`` on the unit of work's connection."""

    def __init__(self, connection: SqlConnection) -> None:
        self._db = connection

    async def get(self, producto_id: int) -> Producto | None:
        row = await self._db.fetch_one(_GET, {"id": producto_id})
        return None if row is None else _to_producto(row)

    async def list(self, *, after: int = 0, limit: int = 100) -> Sequence[Producto]:
        return [_to_producto(row) for row in await self._db.fetch_all(_PAGE, {"after": after, "limit": limit})]

    async def add(self, producto: NewProducto) -> Producto:
        values = {
            "v_nombre": producto.nombre,
            "v_descripcion": producto.descripcion,
            "v_precio": producto.precio,
            "v_stock": producto.stock,
            "now": datetime.now(UTC),
        }
        row = await self._db.fetch_one(_INSERT, values)
        assert row is not None  # INSERT ... RETURNING returns the row
        return _to_producto(row)

    async def update(
        self, producto_id: int, patch: ProductoPatch, *, expected_version: int | None = None
    ) -> Producto | None:
        changes = patch.changes
        fields = tuple(name for name in _PATCHABLE if name in changes)
        values: dict[str, Any] = {f"v_{name}": changes[name] for name in fields}
        values.update(key=producto_id, now=datetime.now(UTC), expected=expected_version)
        row = await self._db.fetch_one(_update(fields, expected_version is not None), values)
        if row is None and expected_version is not None and await self._exists(producto_id):
            raise StaleVersionError(f"Producto {producto_id} was modified: version is not {expected_version}")
        return None if row is None else _to_producto(row)

    async def delete(self, producto_id: int, *, expected_version: int | None = None) -> bool:
        values = {"id": producto_id, "expected": expected_version}
        if await self._db.fetch_one(_delete(expected_version is not None), values) is not None:
            return True
        if expected_version is not None and await self._exists(producto_id):
            raise StaleVersionError(f"Producto {producto_id} was modified: version is not {expected_version}")
        return False

    async def _exists(self, producto_id: int) -> bool:
        return await self._db.fetch_one(_EXISTS, {"id": producto_id}) is not None


class SqlProductosUnitOfWork(SqlUnitOfWork):
    """The products unit of work: ``productos`` is the repository on this unit's connection."""

    productos: SqlProductoRepository

    def _bind(self, connection: SqlConnection) -> None:
        self.productos = SqlProductoRepository(connection)
