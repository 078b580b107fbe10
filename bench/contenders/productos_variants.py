"""productos with one change made from outside, for before/after measurements (``--variant``); no productos code
edited.

- ``sqlalchemy_core``: the products repository's statements run by SQLAlchemy's own execution on PostgreSQL too
  (``SqlAlchemyUnitOfWorkBase``), with a transaction (BEGIN, statement, COMMIT) around every write, as productos
  was before its requests ran on the pooled asyncpg connection and its single-statement writes in autocommit.
  Run it beside productos:
  ``python -m bench.run --contenders ac --variant core:APP=bench.contenders.productos_variants:sqlalchemy_core``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from productos.db import SqlAlchemyUnitOfWorkBase
from productos.infra.db.statements import SqlAlchemySqlConnection
from productos.main import app as sqlalchemy_core
from productos.services.productos import app as productos_app
from productos.services.productos.repository import SqlProductoRepository


class _TransactionalCoreUnitOfWork(SqlAlchemyUnitOfWorkBase):
    """SQLAlchemy's execution, and a transaction around every write (``autocommit`` ignored)."""

    productos: SqlProductoRepository

    def __init__(self, engine: AsyncEngine, *, read_only: bool = False, autocommit: bool = False, **kw: Any) -> None:
        super().__init__(engine, read_only=read_only, **kw)

    def _bind(self, connection: AsyncConnection) -> None:
        self.productos = SqlProductoRepository(SqlAlchemySqlConnection(connection))


# productos_state() looks the factory up when each worker's lifespan starts.
productos_app.unit_of_work_factory = _TransactionalCoreUnitOfWork.factory  # type: ignore[assignment]

__all__ = ["sqlalchemy_core"]
