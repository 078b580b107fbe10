"""``ProductoService`` on the in-memory fakes: no I/O."""

from __future__ import annotations

from decimal import Decimal

import pytest

from productos.domain import DEFAULT_PAGE_SIZE, ID_MAX, MAX_PAGE_SIZE
from productos.domain.errors import NotFoundError, StaleVersionError
from productos.services.productos.domain import NewProducto, Producto, ProductoPatch
from productos.services.productos.service import ProductoService
from productos.services.productos.testing import InMemoryUnitOfWorkFactory


class CountingFactory(InMemoryUnitOfWorkFactory):
    """Counts the units of work opened: invalid ids must not reach the repository."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = 0

    def __call__(self, *, read_only: bool = False, autocommit: bool = False):  # type: ignore[no-untyped-def]
        self.opened += 1
        return super().__call__(read_only=read_only, autocommit=autocommit)


@pytest.fixture
def factory() -> CountingFactory:
    return CountingFactory()


@pytest.fixture
def service(factory: CountingFactory) -> ProductoService:
    return ProductoService(factory)


def mesa(**fields: object) -> NewProducto:
    return NewProducto(**{"nombre": "Mesa", "precio": Decimal("19.99"), **fields})  # type: ignore[arg-type]


async def test_create_then_get(service: ProductoService, factory: CountingFactory) -> None:
    created = await service.create(mesa(stock=2))
    assert created.id == 1 and created.version == 1 and created.stock == 2
    assert await service.get(created.id) == created
    assert factory.store.rows == {created.id: created}


async def test_get_missing_raises_not_found(service: ProductoService) -> None:
    with pytest.raises(NotFoundError, match="7"):
        await service.get(7)


@pytest.mark.parametrize("bad_id", [0, -1, ID_MAX + 1, 2**100])
async def test_invalid_ids_are_not_found_without_a_query(
    service: ProductoService, factory: CountingFactory, bad_id: int
) -> None:
    with pytest.raises(NotFoundError):
        await service.get(bad_id)
    with pytest.raises(NotFoundError):
        await service.update(bad_id, ProductoPatch({"stock": 1}))
    with pytest.raises(NotFoundError):
        await service.delete(bad_id)
    assert factory.opened == 0


async def test_update_applies_patch(service: ProductoService) -> None:
    created = await service.create(mesa())
    updated = await service.update(created.id, ProductoPatch({"stock": 9}))
    assert (updated.stock, updated.version, updated.nombre) == (9, 2, "Mesa")
    assert await service.get(created.id) == updated


async def test_update_missing_raises_not_found_and_writes_nothing(
    service: ProductoService, factory: CountingFactory
) -> None:
    with pytest.raises(NotFoundError):
        await service.update(5, ProductoPatch({"stock": 1}))
    assert factory.store.rows == {}


async def test_update_with_expected_version(service: ProductoService) -> None:
    created = await service.create(mesa())
    updated = await service.update(created.id, ProductoPatch({"stock": 1}), expected_version=1)
    assert updated.version == 2
    with pytest.raises(StaleVersionError):
        await service.update(created.id, ProductoPatch({"stock": 2}), expected_version=1)
    assert await service.get(created.id) == updated


async def test_delete(service: ProductoService) -> None:
    created = await service.create(mesa())
    await service.delete(created.id)
    with pytest.raises(NotFoundError):
        await service.get(created.id)
    with pytest.raises(NotFoundError):
        await service.delete(created.id)


async def test_delete_with_stale_version_keeps_the_product(service: ProductoService) -> None:
    created = await service.create(mesa())
    await service.update(created.id, ProductoPatch({"stock": 1}))
    with pytest.raises(StaleVersionError):
        await service.delete(created.id, expected_version=1)
    assert (await service.get(created.id)).version == 2
    await service.delete(created.id, expected_version=2)
    with pytest.raises(NotFoundError):
        await service.get(created.id)


async def _create_many(service: ProductoService, count: int) -> list[Producto]:
    return [await service.create(mesa(nombre=f"p{i}")) for i in range(count)]


async def test_list_pages_with_a_next_cursor(service: ProductoService) -> None:
    created = await _create_many(service, 5)
    first = await service.list(limit=2)
    assert list(first.items) == created[:2]
    assert first.next_after == created[1].id
    second = await service.list(after=first.next_after, limit=2)
    assert list(second.items) == created[2:4]
    third = await service.list(after=second.next_after or 0, limit=2)
    assert list(third.items) == created[4:]
    assert third.next_after is None


async def test_list_exactly_one_page_has_no_next_cursor(service: ProductoService) -> None:
    await _create_many(service, 3)
    page = await service.list(limit=3)
    assert len(page.items) == 3
    assert page.next_after is None


async def test_list_empty(service: ProductoService) -> None:
    page = await service.list()
    assert list(page.items) == [] and page.next_after is None


async def test_list_clamps_the_limit(service: ProductoService) -> None:
    await _create_many(service, 3)
    assert len((await service.list(limit=0)).items) == 1
    assert len((await service.list(limit=-5)).items) == 1


async def test_list_never_returns_more_than_the_max_page(factory: CountingFactory) -> None:
    service = ProductoService(factory)
    async with factory() as uow:
        for i in range(MAX_PAGE_SIZE + 5):
            await uow.productos.add(mesa(nombre=f"p{i}"))
        await uow.commit()
    page = await service.list(limit=MAX_PAGE_SIZE * 10)
    assert len(page.items) == MAX_PAGE_SIZE
    assert page.next_after == page.items[-1].id
    default = await service.list()
    assert len(default.items) == DEFAULT_PAGE_SIZE
