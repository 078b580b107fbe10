"""The repository and unit-of-work contract (``productos.domain.ports``), run against every backend.

The in-memory fake must behave as the SQL adapters do, or unit tests on it prove nothing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from productos.domain import ID_MAX, UnitOfWorkFactory
from productos.domain.errors import ConflictError, StaleVersionError
from productos.services.productos.domain import NewProducto, Producto, ProductoPatch


def new(**fields: Any) -> NewProducto:
    values: dict[str, Any] = {"nombre": "Mesa", "precio": Decimal("19.99"), **fields}
    return NewProducto(**values)


async def add(uow_factory: UnitOfWorkFactory, **fields: Any) -> Producto:
    async with uow_factory() as uow:
        producto = await uow.productos.add(new(**fields))
        await uow.commit()
    return producto


async def get(uow_factory: UnitOfWorkFactory, producto_id: int) -> Producto | None:
    async with uow_factory(read_only=True) as uow:
        return await uow.productos.get(producto_id)


async def list_all(uow_factory: UnitOfWorkFactory) -> list[Producto]:
    async with uow_factory(read_only=True) as uow:
        return list(await uow.productos.list(after=0, limit=10_000))


async def update(
    uow_factory: UnitOfWorkFactory,
    producto_id: int,
    changes: dict[str, object],
    expected_version: int | None = None,
) -> Producto | None:
    async with uow_factory() as uow:
        updated = await uow.productos.update(producto_id, ProductoPatch(changes), expected_version=expected_version)
        await uow.commit()
    return updated


def assert_utc(value: datetime) -> None:
    assert value.tzinfo is not None, "naive datetime"
    assert value.utcoffset() == timedelta(0)


# --- add / get -------------------------------------------------------------------------------------------


async def test_add_assigns_id_version_and_utc_timestamps(uow_factory: UnitOfWorkFactory) -> None:
    before = datetime.now(UTC)
    created = await add(uow_factory, nombre="  Mesa  ", descripcion="Roble", precio=Decimal("19.99"), stock=3)
    after = datetime.now(UTC)

    assert created.id >= 1
    assert (created.nombre, created.descripcion, created.precio, created.stock) == (
        "Mesa",
        "Roble",
        Decimal("19.99"),
        3,
    )
    assert created.version == 1
    assert created.created_at == created.updated_at
    assert_utc(created.created_at)
    assert before - timedelta(seconds=1) <= created.created_at <= after + timedelta(seconds=1)
    assert await get(uow_factory, created.id) == created


async def test_ids_increase_with_each_add(uow_factory: UnitOfWorkFactory) -> None:
    ids = [(await add(uow_factory, nombre=f"p{i}")).id for i in range(3)]
    assert ids == sorted(set(ids))


async def test_ids_of_deleted_rows_are_never_reused(uow_factory: UnitOfWorkFactory) -> None:
    # A reused id would make a client's stale id (and ETag) address a different product.
    first = await add(uow_factory, nombre="first")
    async with uow_factory() as uow:
        assert await uow.productos.delete(first.id)
        await uow.commit()
    second = await add(uow_factory, nombre="second")
    assert second.id > first.id


@pytest.mark.parametrize("producto_id", [1, 424242, ID_MAX])
async def test_get_missing_returns_none(uow_factory: UnitOfWorkFactory, producto_id: int) -> None:
    assert await get(uow_factory, producto_id) is None


async def test_reads_see_own_uncommitted_writes(uow_factory: UnitOfWorkFactory) -> None:
    async with uow_factory() as uow:
        created = await uow.productos.add(new())
        assert await uow.productos.get(created.id) == created
        assert [p.id for p in await uow.productos.list()] == [created.id]
        updated = await uow.productos.update(created.id, ProductoPatch({"stock": 5}))
        assert updated is not None
        assert await uow.productos.get(created.id) == updated
        assert await uow.productos.delete(created.id)
        assert await uow.productos.get(created.id) is None
        await uow.commit()


# --- transactions ----------------------------------------------------------------------------------------


async def test_leaving_without_commit_rolls_back(uow_factory: UnitOfWorkFactory) -> None:
    async with uow_factory() as uow:
        created = await uow.productos.add(new())
    assert await get(uow_factory, created.id) is None
    assert await list_all(uow_factory) == []


async def test_exception_rolls_back(uow_factory: UnitOfWorkFactory) -> None:
    kept = await add(uow_factory, nombre="kept")
    with pytest.raises(RuntimeError, match="boom"):
        async with uow_factory() as uow:
            await uow.productos.add(new(nombre="lost"))
            await uow.productos.update(kept.id, ProductoPatch({"nombre": "changed"}))
            raise RuntimeError("boom")
    assert await list_all(uow_factory) == [kept]


async def test_explicit_rollback_discards_only_earlier_changes(uow_factory: UnitOfWorkFactory) -> None:
    async with uow_factory() as uow:
        discarded = await uow.productos.add(new(nombre="discarded"))
        await uow.rollback()
        kept = await uow.productos.add(new(nombre="kept"))
        await uow.commit()
    assert discarded.nombre == "discarded"
    assert await list_all(uow_factory) == [kept]


async def test_uncommitted_update_and_delete_are_rolled_back(uow_factory: UnitOfWorkFactory) -> None:
    a = await add(uow_factory, nombre="a")
    b = await add(uow_factory, nombre="b")
    async with uow_factory() as uow:
        await uow.productos.update(a.id, ProductoPatch({"stock": 99}))
        await uow.productos.delete(b.id)
    assert await list_all(uow_factory) == [a, b]


async def test_uncommitted_changes_are_invisible_to_other_units_of_work(
    uow_factory: UnitOfWorkFactory,
) -> None:
    async with uow_factory() as writer:
        created = await writer.productos.add(new())
        assert await get(uow_factory, created.id) is None
        assert await list_all(uow_factory) == []
        await writer.commit()
    assert await get(uow_factory, created.id) == created


# --- list: keyset pagination -----------------------------------------------------------------------------


async def test_list_empty(uow_factory: UnitOfWorkFactory) -> None:
    assert await list_all(uow_factory) == []


async def test_list_pages_by_id_walk_every_row_exactly_once(uow_factory: UnitOfWorkFactory) -> None:
    async with uow_factory() as uow:
        created = [await uow.productos.add(new(nombre=f"p{i}")) for i in range(8)]
        await uow.commit()
    # Gaps in the ids must not break the walk.
    async with uow_factory() as uow:
        for gone in (created[2], created[3], created[7]):
            assert await uow.productos.delete(gone.id)
        await uow.commit()
    expected = [p.id for p in created if p not in (created[2], created[3], created[7])]

    seen: list[int] = []
    sizes: list[int] = []
    after = 0
    while True:
        async with uow_factory(read_only=True) as uow:
            page = list(await uow.productos.list(after=after, limit=2))
        if not page:
            break
        sizes.append(len(page))
        seen.extend(p.id for p in page)
        after = page[-1].id
    assert seen == expected
    assert sizes == [2, 2, 1]


async def test_list_after_and_limit(uow_factory: UnitOfWorkFactory) -> None:
    created = [await add(uow_factory, nombre=f"p{i}") for i in range(5)]
    ids = [p.id for p in created]
    async with uow_factory(read_only=True) as uow:
        assert [p.id for p in await uow.productos.list(after=ids[1], limit=2)] == ids[2:4]
        assert [p.id for p in await uow.productos.list(after=ids[-1], limit=10)] == []
        assert [p.id for p in await uow.productos.list(limit=1)] == ids[:1]
        assert list(await uow.productos.list()) == created


# --- update ----------------------------------------------------------------------------------------------


async def test_update_writes_only_the_patched_fields_and_bumps_version(
    uow_factory: UnitOfWorkFactory,
) -> None:
    created = await add(uow_factory, descripcion="Roble", stock=3)
    updated = await update(uow_factory, created.id, {"stock": 7})
    assert updated is not None
    assert updated.stock == 7
    assert (updated.nombre, updated.descripcion, updated.precio) == (created.nombre, "Roble", created.precio)
    assert updated.version == 2
    assert updated.created_at == created.created_at
    assert updated.updated_at >= created.updated_at
    assert_utc(updated.updated_at)
    assert await get(uow_factory, created.id) == updated


async def test_update_every_field(uow_factory: UnitOfWorkFactory) -> None:
    created = await add(uow_factory)
    replacement = NewProducto(nombre="Silla", descripcion="Pino", precio=Decimal("5.50"), stock=2)
    updated = await update(uow_factory, created.id, dict(ProductoPatch.replacing(replacement).changes))
    assert updated is not None
    assert (updated.nombre, updated.descripcion, updated.precio, updated.stock) == (
        "Silla",
        "Pino",
        Decimal("5.50"),
        2,
    )
    assert await get(uow_factory, created.id) == updated


async def test_update_with_none_clears_descripcion(uow_factory: UnitOfWorkFactory) -> None:
    created = await add(uow_factory, descripcion="Roble")
    updated = await update(uow_factory, created.id, {"descripcion": None})
    assert updated is not None and updated.descripcion is None
    stored = await get(uow_factory, created.id)
    assert stored is not None and stored.descripcion is None


async def test_each_update_bumps_the_version_by_one(uow_factory: UnitOfWorkFactory) -> None:
    created = await add(uow_factory)
    versions = []
    for stock in (1, 2, 3):
        updated = await update(uow_factory, created.id, {"stock": stock})
        assert updated is not None
        versions.append(updated.version)
    assert versions == [2, 3, 4]


@pytest.mark.parametrize("expected_version", [None, 1])
async def test_update_missing_returns_none(uow_factory: UnitOfWorkFactory, expected_version: int | None) -> None:
    assert await update(uow_factory, 424242, {"stock": 1}, expected_version) is None


async def test_update_with_matching_expected_version(uow_factory: UnitOfWorkFactory) -> None:
    created = await add(uow_factory)
    updated = await update(uow_factory, created.id, {"stock": 4}, expected_version=1)
    assert updated is not None and (updated.stock, updated.version) == (4, 2)
    updated = await update(uow_factory, created.id, {"stock": 5}, expected_version=2)
    assert updated is not None and (updated.stock, updated.version) == (5, 3)


async def test_update_with_stale_version_raises_and_writes_nothing(uow_factory: UnitOfWorkFactory) -> None:
    created = await add(uow_factory, stock=1)
    current = await update(uow_factory, created.id, {"stock": 2})
    with pytest.raises(StaleVersionError) as raised:
        async with uow_factory() as uow:
            other = await uow.productos.add(new(nombre="same transaction"))
            await uow.productos.update(created.id, ProductoPatch({"stock": 3}), expected_version=1)
            await uow.commit()
    assert isinstance(raised.value, ConflictError)
    assert await get(uow_factory, created.id) == current
    assert await get(uow_factory, other.id) is None


# --- delete ----------------------------------------------------------------------------------------------


async def test_delete(uow_factory: UnitOfWorkFactory) -> None:
    a = await add(uow_factory, nombre="a")
    b = await add(uow_factory, nombre="b")
    async with uow_factory() as uow:
        assert await uow.productos.delete(a.id) is True
        await uow.commit()
    assert await get(uow_factory, a.id) is None
    assert await list_all(uow_factory) == [b]
    async with uow_factory() as uow:
        assert await uow.productos.delete(a.id) is False
        assert await uow.productos.delete(a.id, expected_version=1) is False


async def test_delete_with_expected_version(uow_factory: UnitOfWorkFactory) -> None:
    created = await add(uow_factory)
    current = await update(uow_factory, created.id, {"stock": 2})
    with pytest.raises(StaleVersionError):
        async with uow_factory() as uow:
            await uow.productos.delete(created.id, expected_version=1)
    assert await get(uow_factory, created.id) == current
    async with uow_factory() as uow:
        assert await uow.productos.delete(created.id, expected_version=2) is True
        await uow.commit()
    assert await get(uow_factory, created.id) is None


# --- values ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("precio", ["0.01", "0.10", "1", "19.99", "12345678.90", "99999999.99"])
async def test_precio_round_trips_exactly(uow_factory: UnitOfWorkFactory, precio: str) -> None:
    expected = Decimal(precio).quantize(Decimal("0.01"))
    created = await add(uow_factory, precio=Decimal(precio))
    stored = await get(uow_factory, created.id)
    assert stored is not None
    assert isinstance(stored.precio, Decimal)
    assert stored.precio == expected
    assert str(stored.precio) == str(expected)

    other = await add(uow_factory)
    updated = await update(uow_factory, other.id, {"precio": Decimal(precio)})
    assert updated is not None and str(updated.precio) == str(expected)
    stored = await get(uow_factory, other.id)
    assert stored is not None and str(stored.precio) == str(expected)


async def test_timestamps_are_utc_aware_everywhere(uow_factory: UnitOfWorkFactory) -> None:
    created = await add(uow_factory)
    await update(uow_factory, created.id, {"stock": 1})
    for producto in [await get(uow_factory, created.id), *await list_all(uow_factory)]:
        assert producto is not None
        assert_utc(producto.created_at)
        assert_utc(producto.updated_at)
        assert producto.updated_at >= producto.created_at


async def test_text_round_trips(uow_factory: UnitOfWorkFactory) -> None:
    nombre = "Ñandú 🦤 " + "x" * 190
    descripcion = "línea 1\nlínea 2 — 'comillas' \"dobles\" ; DROP TABLE productos; --" + "y" * 4900
    created = await add(uow_factory, nombre=nombre, descripcion=descripcion)
    stored = await get(uow_factory, created.id)
    assert stored is not None
    assert (stored.nombre, stored.descripcion) == (nombre.strip(), descripcion)


# --- concurrency -----------------------------------------------------------------------------------------


async def test_concurrent_increments_with_optimistic_retry_all_apply(uow_factory: UnitOfWorkFactory) -> None:
    created = await add(uow_factory, stock=0)

    async def increment() -> int:
        attempts = 0
        while True:
            attempts += 1
            try:
                async with uow_factory() as uow:
                    current = await uow.productos.get(created.id)
                    assert current is not None
                    await asyncio.sleep(0)  # let the other writers read the same version
                    await uow.productos.update(
                        created.id,
                        ProductoPatch({"stock": current.stock + 1}),
                        expected_version=current.version,
                    )
                    await asyncio.sleep(0)  # and let them try to write before this one commits
                    await uow.commit()
                return attempts
            except StaleVersionError:
                assert attempts < 200, "no progress"

    await asyncio.gather(*(increment() for _ in range(20)))
    stored = await get(uow_factory, created.id)
    assert stored is not None
    assert (stored.stock, stored.version) == (20, 21)


async def test_concurrent_unconditional_updates_are_all_applied(uow_factory: UnitOfWorkFactory) -> None:
    created = await add(uow_factory)

    async def rename(i: int) -> Producto | None:
        return await update(uow_factory, created.id, {"nombre": f"n{i}"})

    results = await asyncio.gather(*(rename(i) for i in range(20)))
    assert sorted(r.version for r in results if r is not None) == list(range(2, 22))
    stored = await get(uow_factory, created.id)
    assert stored is not None and stored.version == 21
    # The last writer wins: the stored row is the one of the update that got version 21.
    assert stored.nombre == next(r.nombre for r in results if r is not None and r.version == 21)


async def test_racing_writers_with_the_same_expected_version_only_one_wins(
    uow_factory: UnitOfWorkFactory,
) -> None:
    created = await add(uow_factory, stock=0)
    barrier = asyncio.Barrier(2)

    async def write(stock: int) -> Producto | StaleVersionError:
        current = await get(uow_factory, created.id)
        assert current is not None
        await barrier.wait()  # both have read version 1 before either writes
        try:
            return await update(uow_factory, created.id, {"stock": stock}, expected_version=current.version)  # type: ignore[return-value]
        except StaleVersionError as exc:
            return exc

    results = await asyncio.gather(write(10), write(20))
    winners = [r for r in results if isinstance(r, Producto)]
    losers = [r for r in results if isinstance(r, StaleVersionError)]
    assert len(winners) == 1 and len(losers) == 1
    stored = await get(uow_factory, created.id)
    assert stored == winners[0]
    assert stored is not None and stored.version == 2
