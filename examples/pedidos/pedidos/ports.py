"""What the orders use cases need: a repository and a unit of work, on productos' generic ports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pedidos.domain import Estado, NewPedido, Pedido
from productos.domain import UnitOfWork


class PedidoRepository(Protocol):
    async def get(self, pedido_id: int, *, for_update: bool = False) -> Pedido | None: ...

    async def list(self, *, after: int, limit: int) -> Sequence[Pedido]: ...

    async def add(self, pedido: NewPedido) -> Pedido: ...

    async def set_estado(self, pedido_id: int, estado: Estado) -> Pedido: ...


class PedidosUnitOfWork(UnitOfWork, Protocol):
    @property
    def pedidos(self) -> PedidoRepository: ...
