"""The orders repository contract and use cases, on every backend (``units`` runs each test three times)."""

from __future__ import annotations

import asyncio

import pytest
from pedidos.domain import Estado, NewPedido
from pedidos.ports import PedidosUnitOfWork
from pedidos.service import PedidoService

from productos.domain import ConflictError, NotFoundError, UnitOfWorkFactory


async def test_add_then_get_round_trips_every_field(units: UnitOfWorkFactory[PedidosUnitOfWork]) -> None:
    async with units() as uow:
        created = await uow.pedidos.add(NewPedido(producto_id=7, cantidad=3))
        await uow.commit()
    assert created.id >= 1 and created.estado is Estado.PENDIENTE
    assert created.created_at.utcoffset() is not None and created.created_at == created.updated_at
    async with units(read_only=True) as uow:
        assert await uow.pedidos.get(created.id) == created
        assert await uow.pedidos.get(created.id + 1000) is None


async def test_leaving_without_commit_keeps_nothing(units: UnitOfWorkFactory[PedidosUnitOfWork]) -> None:
    async with units() as uow:
        await uow.pedidos.add(NewPedido(producto_id=1, cantidad=1))
    async with units(read_only=True) as uow:
        assert list(await uow.pedidos.list(after=0, limit=10)) == []


async def test_keyset_pages_in_id_order(units: UnitOfWorkFactory[PedidosUnitOfWork]) -> None:
    service = PedidoService(units)
    ids = [(await service.create(NewPedido(producto_id=n + 1, cantidad=1))).id for n in range(5)]
    first = await service.list(after=0, limit=2)
    assert [p.id for p in first.items] == ids[:2] and first.next_after == ids[1]
    last = await service.list(after=ids[3], limit=2)
    assert [p.id for p in last.items] == ids[4:] and last.next_after is None


async def test_life_cycle_and_refused_transitions(units: UnitOfWorkFactory[PedidosUnitOfWork]) -> None:
    service = PedidoService(units)
    pedido = await service.create(NewPedido(producto_id=3, cantidad=2))
    with pytest.raises(ConflictError):
        await service.change_estado(pedido.id, Estado.ENVIADO)
    assert (await service.get(pedido.id)).estado is Estado.PENDIENTE
    paid = await service.change_estado(pedido.id, Estado.PAGADO)
    assert paid.estado is Estado.PAGADO and paid.updated_at >= pedido.updated_at
    assert (await service.change_estado(pedido.id, Estado.ENVIADO)).estado is Estado.ENVIADO
    with pytest.raises(NotFoundError):
        await service.change_estado(pedido.id + 1000, Estado.PAGADO)
    with pytest.raises(NotFoundError):
        await service.get(2**70)


async def test_concurrent_transitions_apply_one_after_the_other(units: UnitOfWorkFactory[PedidosUnitOfWork]) -> None:
    service = PedidoService(units)
    pedido = await service.create(NewPedido(producto_id=9, cantidad=1))
    await service.change_estado(pedido.id, Estado.PAGADO)
    # Both read "pagado" unless the row lock orders them: then the second sees "enviado" and is refused.
    results = await asyncio.gather(
        *(service.change_estado(pedido.id, Estado.ENVIADO) for _ in range(2)), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["ConflictError", "Pedido"]
    assert (await service.get(pedido.id)).estado is Estado.ENVIADO
