"""productos with one change made from outside, for before/after measurements (``--variant``); no productos code
edited.

- ``sqlalchemy_core``: the products repository on SQLAlchemy Core on PostgreSQL too, with a transaction (BEGIN,
  statement, COMMIT) around every write, as productos was before its requests ran their SQL on the pooled
  asyncpg connection and its single-statement writes in autocommit. Run it beside productos:
  ``python -m bench.run --contenders ac --variant core:APP=bench.contenders.productos_variants:sqlalchemy_core``.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from productos.main import app as sqlalchemy_core
from productos.services.productos import app as productos_app
from productos.services.productos.repository import SqlAlchemyUnitOfWork, SqlAlchemyUnitOfWorkFactory


class _TransactionalCoreFactory(SqlAlchemyUnitOfWorkFactory):
    """SQLAlchemy Core units of work that ignore ``autocommit``: every write is a transaction."""

    def __call__(self, *, read_only: bool = False, autocommit: bool = False) -> SqlAlchemyUnitOfWork:
        return super().__call__(read_only=read_only)


def _core_factory(engine: AsyncEngine, *, acquire_timeout: float | None = None) -> _TransactionalCoreFactory:
    return _TransactionalCoreFactory(engine, acquire_timeout=acquire_timeout)


# productos_state() looks the factory up when each worker's lifespan starts.
productos_app.unit_of_work_factory = _core_factory  # type: ignore[assignment]

__all__ = ["sqlalchemy_core"]
