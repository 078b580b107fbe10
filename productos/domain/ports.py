"""Generic ports: what a service's use cases need from the outside world, as Protocols.

A service declares its own unit of work as a Protocol that extends ``UnitOfWork`` with its repositories, and
writes its use cases against ``UnitOfWorkFactory[ThatUnitOfWork]``::

    class PedidosUnitOfWork(UnitOfWork, Protocol):
        @property
        def pedidos(self) -> PedidoRepository: ...

    class PedidoService:
        def __init__(self, units: UnitOfWorkFactory[PedidosUnitOfWork]) -> None: ...

Adapters: ``productos.db`` (SQLAlchemy and asyncpg); fakes for tests in each service's ``testing`` module.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self, TypeVar

__all__ = ["HealthProbe", "UnitOfWork", "UnitOfWorkFactory", "UnitOfWorkT"]


class UnitOfWork(Protocol):
    """One transaction. ``async with uow:`` opens it; leaving without ``commit()`` rolls back."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


UnitOfWorkT = TypeVar("UnitOfWorkT", bound=UnitOfWork, covariant=True)


class UnitOfWorkFactory(Protocol[UnitOfWorkT]):
    """Makes units of work.

    ``read_only=True``: the unit only reads; the adapter may skip the transaction, and may read from a replica
    that lags a little behind the primary, never after the request has written. ``autocommit=True``: the
    unit runs one write statement (each repository write is atomic on its own), so the adapter may run it
    without a transaction, and save a BEGIN and a COMMIT round trip; it is committed as it runs.
    ``commit()`` is still called, and does nothing more.
    """

    def __call__(self, *, read_only: bool = False, autocommit: bool = False) -> UnitOfWorkT: ...


class HealthProbe(Protocol):
    """Checks a dependency; raises ``DatabaseUnavailableError`` (or returns) within ``timeout`` seconds."""

    async def ping(self, timeout: float) -> None: ...
