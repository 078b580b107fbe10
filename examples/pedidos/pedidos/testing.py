"""In-memory fakes of the orders service, for unit tests: the SQL repository's contract, no I/O."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from pedidos.domain import Estado, NewPedido, Pedido


class InMemoryPedidoStore:
    """The state every unit of work of one factory shares; one lock orders writers, as row locks would."""

    def __init__(self) -> None:
        self.rows: dict[int, Pedido] = {}
        self.ids = itertools.count(1)
        self.lock = asyncio.Lock()


class InMemoryPedidoRepository:
    """``PedidoRepository`` over a dict; changes are staged and applied on commit."""

    def __init__(self, store: InMemoryPedidoStore) -> None:
        self._store = store
        self.staged: dict[int, Pedido] = {}

    async def get(self, pedido_id: int, *, for_update: bool = False) -> Pedido | None:
        return self.staged.get(pedido_id) or self._store.rows.get(pedido_id)

    async def list(self, *, after: int, limit: int) -> Sequence[Pedido]:
        rows = {**self._store.rows, **self.staged}
        return [rows[key] for key in sorted(rows) if key > after][:limit]

    async def add(self, pedido: NewPedido) -> Pedido:
        now = datetime.now(UTC)
        created = Pedido(
            id=next(self._store.ids),
            producto_id=pedido.producto_id,
            cantidad=pedido.cantidad,
            estado=Estado.PENDIENTE,
            created_at=now,
            updated_at=now,
        )
        self.staged[created.id] = created
        return created

    async def set_estado(self, pedido_id: int, estado: Estado) -> Pedido:
        current = await self.get(pedido_id)
        if current is None:
            raise LookupError(f"no pedido {pedido_id}")
        changed = dataclasses.replace(current, estado=estado, updated_at=datetime.now(UTC))
        self.staged[pedido_id] = changed
        return changed


class InMemoryPedidosUnitOfWork:
    pedidos: InMemoryPedidoRepository

    def __init__(self, store: InMemoryPedidoStore, *, read_only: bool = False, autocommit: bool = False) -> None:
        self._store = store
        self._read_only = read_only
        self._autocommit = autocommit

    async def __aenter__(self) -> Self:
        if not self._read_only:
            await self._store.lock.acquire()
        self.pedidos = InMemoryPedidoRepository(self._store)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._autocommit:
            await self.commit()
        self.pedidos.staged.clear()
        if not self._read_only:
            self._store.lock.release()

    async def commit(self) -> None:
        self._store.rows.update(self.pedidos.staged)
        self.pedidos.staged.clear()

    async def rollback(self) -> None:
        self.pedidos.staged.clear()


class InMemoryPedidosUnitOfWorkFactory:
    """``UnitOfWorkFactory[PedidosUnitOfWork]`` whose units share one store."""

    def __init__(self, store: InMemoryPedidoStore | None = None) -> None:
        self.store = store or InMemoryPedidoStore()

    def __call__(self, *, read_only: bool = False, autocommit: bool = False) -> InMemoryPedidosUnitOfWork:
        return InMemoryPedidosUnitOfWork(self.store, read_only=read_only, autocommit=autocommit)
