"""Use cases of the products service, written against the ports only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from productos.domain.errors import NotFoundError
from productos.domain.models import NewProducto, Producto, ProductoPatch, is_valid_id
from productos.domain.ports import UnitOfWorkFactory

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Page:
    items: Sequence[Producto]
    #: The ``after`` cursor of the next page, or ``None`` on the last page.
    next_after: int | None


class ProductService:
    """Create, read, update and delete products; every write is one unit of work."""

    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow = uow_factory

    async def get(self, producto_id: int) -> Producto:
        if not is_valid_id(producto_id):
            raise NotFoundError(f"Producto {producto_id} no encontrado")
        async with self._uow(read_only=True) as uow:
            producto = await uow.productos.get(producto_id)
        if producto is None:
            raise NotFoundError(f"Producto {producto_id} no encontrado")
        return producto

    async def list(self, *, after: int = 0, limit: int = DEFAULT_PAGE_SIZE) -> Page:
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        async with self._uow(read_only=True) as uow:
            # One extra row tells whether a next page exists without a COUNT.
            rows = await uow.productos.list(after=after, limit=limit + 1)
        items = rows[:limit]
        next_after = items[-1].id if len(rows) > limit else None
        return Page(items=items, next_after=next_after)

    async def create(self, producto: NewProducto) -> Producto:
        async with self._uow() as uow:
            created = await uow.productos.add(producto)
            await uow.commit()
        return created

    async def update(
        self, producto_id: int, patch: ProductoPatch, *, expected_version: int | None = None
    ) -> Producto:
        if not is_valid_id(producto_id):
            raise NotFoundError(f"Producto {producto_id} no encontrado")
        async with self._uow() as uow:
            updated = await uow.productos.update(producto_id, patch, expected_version=expected_version)
            if updated is None:
                raise NotFoundError(f"Producto {producto_id} no encontrado")
            await uow.commit()
        return updated

    async def delete(self, producto_id: int, *, expected_version: int | None = None) -> None:
        if not is_valid_id(producto_id):
            raise NotFoundError(f"Producto {producto_id} no encontrado")
        async with self._uow() as uow:
            deleted = await uow.productos.delete(producto_id, expected_version=expected_version)
            if not deleted:
                raise NotFoundError(f"Producto {producto_id} no encontrado")
            await uow.commit()
