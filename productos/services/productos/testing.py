"""In-memory fakes of the products service for unit tests and examples: the SQL adapters' contract, no I/O."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from productos.domain import StaleVersionError
from productos.services.productos.domain import NewProducto, Producto, ProductoPatch

__all__ = ["InMemoryProductoRepository", "InMemoryStore", "InMemoryUnitOfWork", "InMemoryUnitOfWorkFactory"]


class InMemoryStore:
    """The shared state of every unit of work made by one ``InMemoryUnitOfWorkFactory``."""

    def __init__(self) -> None:
        self.rows: dict[int, Producto] = {}
        self.ids = itertools.count(1)
        self.lock = asyncio.Lock()


class InMemoryProductoRepository:
    """``ProductoRepository`` over a dict; changes are staged and applied on commit."""

    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self.staged: dict[int, Producto | None] = {}

    def _current(self, producto_id: int) -> Producto | None:
        if producto_id in self.staged:
            return self.staged[producto_id]
        return self._store.rows.get(producto_id)

    async def get(self, producto_id: int) -> Producto | None:
        return self._current(producto_id)

    async def list(self, *, after: int = 0, limit: int = 100) -> Sequence[Producto]:
        ids = sorted({*self._store.rows, *self.staged})
        rows = (self._current(i) for i in ids if i > after)
        return list(itertools.islice((r for r in rows if r is not None), limit))

    async def add(self, producto: NewProducto) -> Producto:
        now = datetime.now(UTC)
        created = Producto(
            id=next(self._store.ids),
            nombre=producto.nombre,
            descripcion=producto.descripcion,
            precio=producto.precio,
            stock=producto.stock,
            created_at=now,
            updated_at=now,
            version=1,
        )
        self.staged[created.id] = created
        return created

    async def update(
        self, producto_id: int, patch: ProductoPatch, *, expected_version: int | None = None
    ) -> Producto | None:
        current = self._current(producto_id)
        if current is None:
            return None
        self._check_version(current, expected_version)
        updated = dataclasses.replace(
            current,
            **patch.changes,  # type: ignore[arg-type]
            version=current.version + 1,
            updated_at=datetime.now(UTC),
        )
        self.staged[producto_id] = updated
        return updated

    async def delete(self, producto_id: int, *, expected_version: int | None = None) -> bool:
        current = self._current(producto_id)
        if current is None:
            return False
        self._check_version(current, expected_version)
        self.staged[producto_id] = None
        return True

    @staticmethod
    def _check_version(current: Producto, expected_version: int | None) -> None:
        if expected_version is not None and current.version != expected_version:
            raise StaleVersionError(f"Producto {current.id} was modified: version is not {expected_version}")


class InMemoryUnitOfWork:
    """Serialises writers on one lock, as a database's row locks would."""

    productos: InMemoryProductoRepository

    def __init__(self, store: InMemoryStore, *, read_only: bool = False, autocommit: bool = False) -> None:
        self._store = store
        self._read_only = read_only
        self._autocommit = autocommit
        self.committed = False

    async def __aenter__(self) -> Self:
        if not self._read_only:
            await self._store.lock.acquire()
        self.productos = InMemoryProductoRepository(self._store)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._autocommit:
            await self.commit()  # its statements committed as they ran
        self.productos.staged.clear()
        if not self._read_only:
            self._store.lock.release()

    async def commit(self) -> None:
        for producto_id, producto in self.productos.staged.items():
            if producto is None:
                self._store.rows.pop(producto_id, None)
            else:
                self._store.rows[producto_id] = producto
        self.productos.staged.clear()
        self.committed = True

    async def rollback(self) -> None:
        self.productos.staged.clear()


class InMemoryUnitOfWorkFactory:
    """``UnitOfWorkFactory`` whose units of work share one ``InMemoryStore``."""

    def __init__(self, store: InMemoryStore | None = None) -> None:
        self.store = store or InMemoryStore()

    def __call__(self, *, read_only: bool = False, autocommit: bool = False) -> InMemoryUnitOfWork:
        return InMemoryUnitOfWork(self.store, read_only=read_only, autocommit=autocommit)
