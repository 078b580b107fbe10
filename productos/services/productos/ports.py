"""The products service's ports: its repository and its unit of work, on productos' generic ports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from productos.domain import UnitOfWork
from productos.services.productos.domain import NewProducto, Producto, ProductoPatch

__all__ = ["ProductoRepository", "ProductosUnitOfWork"]


class ProductoRepository(Protocol):
    """Stores products. Methods never commit: the unit of work does."""

    async def get(self, producto_id: int) -> Producto | None: ...

    async def add(self, producto: NewProducto) -> Producto: ...

    async def list(self, *, after: int = 0, limit: int = 100) -> Sequence[Producto]:
        """Products with ``id > after`` in id order, at most ``limit`` (keyset pagination)."""
        ...

    async def update(
        self, producto_id: int, patch: ProductoPatch, *, expected_version: int | None = None
    ) -> Producto | None:
        """Apply ``patch`` atomically and bump the version.

        Returns ``None`` when the product does not exist. When ``expected_version`` is given and the
        stored version differs, raises ``StaleVersionError`` and writes nothing.
        """
        ...

    async def delete(self, producto_id: int, *, expected_version: int | None = None) -> bool:
        """Delete the product; ``False`` when it did not exist. Version mismatch: ``StaleVersionError``."""
        ...


class ProductosUnitOfWork(UnitOfWork, Protocol):
    """A unit of work of the products service."""

    # Read-only, so an adapter may narrow the repository type (a mutable protocol attribute is invariant).
    @property
    def productos(self) -> ProductoRepository: ...
