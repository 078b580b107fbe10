"""Ports: what the services need from the outside world, as Protocols.

Adapters live in ``productos.infra``; the in-memory fakes in ``productos.infra.memory``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self

from productos.domain.models import NewProducto, Producto, ProductoPatch


class ProductRepository(Protocol):
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
        stored version differs, raises ``ConflictError`` and writes nothing.
        """
        ...

    async def delete(self, producto_id: int, *, expected_version: int | None = None) -> bool:
        """Delete the product; ``False`` when it did not exist. Version mismatch: ``ConflictError``."""
        ...


class UnitOfWork(Protocol):
    """One transaction. ``async with uow:`` opens it; leaving without ``commit()`` rolls back."""

    # Read-only, so an adapter may narrow the repository type (a mutable protocol attribute is invariant).
    @property
    def productos(self) -> ProductRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    """Makes units of work.

    ``read_only=True``: the unit only reads; the adapter may skip the transaction. ``autocommit=True``: the
    unit runs one write statement (each repository write is atomic on its own), so the adapter may run it
    without a transaction, and save a BEGIN and a COMMIT round trip; it is committed as it runs.
    ``commit()`` is still called, and does nothing more.
    """

    def __call__(self, *, read_only: bool = False, autocommit: bool = False) -> UnitOfWork: ...


class HealthProbe(Protocol):
    """Checks a dependency; raises ``DatabaseUnavailableError`` (or returns) within ``timeout`` seconds."""

    async def ping(self, timeout: float) -> None: ...
