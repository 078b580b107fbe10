"""Orders in SQL: SQLAlchemy Core statements declared once, on productos' ``SqlUnitOfWork``.

On PostgreSQL productos compiles each statement once and runs it on the pooled asyncpg connection; on SQLite
SQLAlchemy runs it. The unit of work brings the pool, the deadlines, the transactions and the error mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from pedidos.domain import Estado, NewPedido, Pedido
from pedidos.tables import pedidos_table as t
from productos.db import SqlConnection, SqlUnitOfWork

_COLUMNS = (t.c.id, t.c.producto_id, t.c.cantidad, t.c.estado, t.c.created_at, t.c.updated_at)
_GET = select(*_COLUMNS).where(t.c.id == bindparam("id"))
# The row lock makes concurrent transitions apply one after the other, each checked.
_GET_FOR_UPDATE = _GET.with_for_update()
_PAGE = select(*_COLUMNS).where(t.c.id > bindparam("after")).order_by(t.c.id).limit(bindparam("limit"))
_INSERT = (
    insert(t)
    .values(
        producto_id=bindparam("v_producto_id"),
        cantidad=bindparam("v_cantidad"),
        estado=Estado.PENDIENTE.value,
        created_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
    .returning(*_COLUMNS)
)
_SET_ESTADO = (
    update(t)
    .where(t.c.id == bindparam("key"))
    .values(estado=bindparam("v_estado"), updated_at=bindparam("now"))
    .returning(*_COLUMNS)
)


def _to_pedido(row: Any) -> Pedido:
    return Pedido(
        id=row.id,
        producto_id=row.producto_id,
        cantidad=row.cantidad,
        estado=Estado(row.estado),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SqlPedidoRepository:
    def __init__(self, connection: SqlConnection) -> None:
        self._db = connection

    async def get(self, pedido_id: int, *, for_update: bool = False) -> Pedido | None:
        row = await self._db.fetch_one(_GET_FOR_UPDATE if for_update else _GET, {"id": pedido_id})
        return None if row is None else _to_pedido(row)

    async def list(self, *, after: int, limit: int) -> Sequence[Pedido]:
        return [_to_pedido(row) for row in await self._db.fetch_all(_PAGE, {"after": after, "limit": limit})]

    async def add(self, pedido: NewPedido) -> Pedido:
        values = {"v_producto_id": pedido.producto_id, "v_cantidad": pedido.cantidad, "now": datetime.now(UTC)}
        row = await self._db.fetch_one(_INSERT, values)
        assert row is not None  # INSERT ... RETURNING returns the row
        return _to_pedido(row)

    async def set_estado(self, pedido_id: int, estado: Estado) -> Pedido:
        row = await self._db.fetch_one(
            _SET_ESTADO, {"key": pedido_id, "v_estado": estado.value, "now": datetime.now(UTC)}
        )
        if row is None:
            raise LookupError(f"no pedido {pedido_id}")
        return _to_pedido(row)


class SqlPedidosUnitOfWork(SqlUnitOfWork):
    pedidos: SqlPedidoRepository

    def _bind(self, connection: SqlConnection) -> None:
        self.pedidos = SqlPedidoRepository(connection)
