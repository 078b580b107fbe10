"""The two ways a unit of work reaches PostgreSQL, for tests that must hold on both: the statement toolkit on
the pooled asyncpg connection (what services use), and SQLAlchemy's own execution on an ``AsyncConnection``
(``SqlAlchemyUnitOfWorkBase``, public for what Core statements cannot express)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from productos.db import SqlAlchemyUnitOfWorkBase
from productos.infra.db.statements import SqlAlchemySqlConnection
from productos.services.productos.repository import SqlProductoRepository, SqlProductosUnitOfWork


class CoreProductosUnitOfWork(SqlAlchemyUnitOfWorkBase):
    """The products repository through SQLAlchemy's execution, on any engine."""

    productos: SqlProductoRepository

    def _bind(self, connection: AsyncConnection) -> None:
        self.productos = SqlProductoRepository(SqlAlchemySqlConnection(connection))


Factory = Callable[[AsyncEngine], Any]
#: (factory of a UnitOfWorkFactory on an engine, id)
PATHS: list[tuple[Factory, str]] = [
    (CoreProductosUnitOfWork.factory, "sqlalchemy-core"),
    (SqlProductosUnitOfWork.factory, "asyncpg-driver"),
]
