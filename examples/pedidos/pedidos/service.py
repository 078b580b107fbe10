"""Use cases of the orders service."""

from __future__ import annotations

from pedidos.domain import Estado, NewPedido, Pedido, check_transition
from pedidos.ports import PedidosUnitOfWork
from productos.domain import NotFoundError, UnitOfWorkFactory, is_valid_id
from productos.pagination import Page, clamp_limit, page_of


class PedidoService:
    def __init__(self, unit_of_work: UnitOfWorkFactory[PedidosUnitOfWork]) -> None:
        self._uow = unit_of_work

    async def create(self, pedido: NewPedido) -> Pedido:
        # One INSERT, atomic by itself: autocommit saves the BEGIN and COMMIT round trips.
        async with self._uow(autocommit=True) as uow:
            created = await uow.pedidos.add(pedido)
            await uow.commit()
        return created

    async def get(self, pedido_id: int) -> Pedido:
        if is_valid_id(pedido_id):
            async with self._uow(read_only=True) as uow:
                pedido = await uow.pedidos.get(pedido_id)
            if pedido is not None:
                return pedido
        raise NotFoundError(f"Pedido {pedido_id} no encontrado")

    async def list(self, *, after: int, limit: int) -> Page[Pedido]:
        limit = clamp_limit(limit)
        async with self._uow(read_only=True) as uow:
            rows = await uow.pedidos.list(after=after, limit=limit + 1)
        return page_of(rows, limit)

    async def change_estado(self, pedido_id: int, estado: Estado) -> Pedido:
        if not is_valid_id(pedido_id):
            raise NotFoundError(f"Pedido {pedido_id} no encontrado")
        async with self._uow() as uow:
            # The row lock makes concurrent transitions apply one after the other, each checked.
            current = await uow.pedidos.get(pedido_id, for_update=True)
            if current is None:
                raise NotFoundError(f"Pedido {pedido_id} no encontrado")
            check_transition(current.estado, estado)
            updated = await uow.pedidos.set_estado(pedido_id, estado)
            await uow.commit()
        return updated
