"""Use cases of the products service, written against the ports only."""

from __future__ import annotations

from productos.domain import (
    DEFAULT_PAGE_SIZE,
    NotFoundError,
    Page,
    StaleVersionError,
    UnitOfWorkFactory,
    clamp_limit,
    is_valid_id,
    page_of,
)
from productos.services.productos.domain import VERSION_MAX, NewProducto, Producto, ProductoPatch
from productos.services.productos.ports import ProductosUnitOfWork

__all__ = ["ProductoService"]


class ProductoService:
    """Create, read, update and delete products; every write is one unit of work.

    Each write is a single atomic statement (the repository's contract), so its unit of work runs in
    ``autocommit``: one round trip, not BEGIN, the statement and COMMIT. Reads (``get``, ``list``) are read-only
    units: with a read replica in the factory (``DATABASE_READ_URL``) they read from it, unless the request has
    written before them (read-your-writes).
    """

    def __init__(self, uow_factory: UnitOfWorkFactory[ProductosUnitOfWork]) -> None:
        self._uow = uow_factory

    async def get(self, producto_id: int) -> Producto:
        if not is_valid_id(producto_id):
            raise NotFoundError(f"Producto {producto_id} no encontrado")
        async with self._uow(read_only=True) as uow:
            producto = await uow.productos.get(producto_id)
        if producto is None:
            raise NotFoundError(f"Producto {producto_id} no encontrado")
        return producto

    async def list(self, *, after: int = 0, limit: int = DEFAULT_PAGE_SIZE) -> Page[Producto]:
        limit = clamp_limit(limit)
        async with self._uow(read_only=True) as uow:
            rows = await uow.productos.list(after=after, limit=limit + 1)
        return page_of(rows, limit)

    async def create(self, producto: NewProducto) -> Producto:
        async with self._uow(autocommit=True) as uow:
            created = await uow.productos.add(producto)
            await uow.commit()
        return created

    async def update(self, producto_id: int, patch: ProductoPatch, *, expected_version: int | None = None) -> Producto:
        if not is_valid_id(producto_id):
            raise NotFoundError(f"Producto {producto_id} no encontrado")
        await self._check_version_can_exist(producto_id, expected_version)
        async with self._uow(autocommit=True) as uow:
            updated = await uow.productos.update(producto_id, patch, expected_version=expected_version)
            if updated is None:
                raise NotFoundError(f"Producto {producto_id} no encontrado")
            await uow.commit()
        return updated

    async def delete(self, producto_id: int, *, expected_version: int | None = None) -> None:
        if not is_valid_id(producto_id):
            raise NotFoundError(f"Producto {producto_id} no encontrado")
        await self._check_version_can_exist(producto_id, expected_version)
        async with self._uow(autocommit=True) as uow:
            deleted = await uow.productos.delete(producto_id, expected_version=expected_version)
            if not deleted:
                raise NotFoundError(f"Producto {producto_id} no encontrado")
            await uow.commit()

    async def _check_version_can_exist(self, producto_id: int, expected_version: int | None) -> None:
        """A version no product can have (beyond its column's range) is stale when the product exists, and the
        product is missing otherwise: answered without asking the database to compare an out-of-range value."""
        if expected_version is None or 1 <= expected_version <= VERSION_MAX:
            return
        await self.get(producto_id)
        raise StaleVersionError(f"Producto {producto_id} was modified: version is not {expected_version}")
