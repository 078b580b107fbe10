"""Orders on SQLAlchemy Core, on productos' unit-of-work base (pool, deadlines, transactions, error mapping)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pedidos.domain import Estado, NewPedido, Pedido
from pedidos.tables import pedidos_table as t
from productos.db import SqlAlchemyUnitOfWorkBase, translate_db_errors

_COLUMNS = (t.c.id, t.c.producto_id, t.c.cantidad, t.c.estado, t.c.created_at, t.c.updated_at)


def _to_pedido(row: Row[Any] | Any) -> Pedido:
    return Pedido(
        id=row.id,
        producto_id=row.producto_id,
        cantidad=row.cantidad,
        estado=Estado(row.estado),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SqlAlchemyPedidoRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def get(self, pedido_id: int, *, for_update: bool = False) -> Pedido | None:
        statement = select(*_COLUMNS).where(t.c.id == pedido_id)
        if for_update:
            statement = statement.with_for_update()
        async with translate_db_errors():
            row = (await self._conn.execute(statement)).first()
        return None if row is None else _to_pedido(row)

    async def list(self, *, after: int, limit: int) -> Sequence[Pedido]:
        statement = select(*_COLUMNS).where(t.c.id > after).order_by(t.c.id).limit(limit)
        async with translate_db_errors():
            return [_to_pedido(row) for row in await self._conn.execute(statement)]

    async def add(self, pedido: NewPedido) -> Pedido:
        now = datetime.now(UTC)
        statement = (
            insert(t)
            .values(
                producto_id=pedido.producto_id,
                cantidad=pedido.cantidad,
                estado=Estado.PENDIENTE.value,
                created_at=now,
                updated_at=now,
            )
            .returning(*_COLUMNS)
        )
        async with translate_db_errors():
            return _to_pedido((await self._conn.execute(statement)).one())

    async def set_estado(self, pedido_id: int, estado: Estado) -> Pedido:
        statement = (
            update(t)
            .where(t.c.id == pedido_id)
            .values(estado=estado.value, updated_at=datetime.now(UTC))
            .returning(*_COLUMNS)
        )
        async with translate_db_errors():
            return _to_pedido((await self._conn.execute(statement)).one())


class SqlPedidosUnitOfWork(SqlAlchemyUnitOfWorkBase):
    pedidos: SqlAlchemyPedidoRepository

    def _bind(self, connection: AsyncConnection) -> None:
        self.pedidos = SqlAlchemyPedidoRepository(connection)
