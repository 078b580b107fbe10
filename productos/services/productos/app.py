"""The products service's composition: its unit of work on the runtime's engine, its use cases, its app.

``gunicorn -c python:productos.gunicorn_conf productos.main:app`` serves it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from productos.db import ReadReplica
from productos.domain import UnitOfWorkFactory
from productos.migrations import Migrations
from productos.runtime import Runtime, create_service
from productos.services.productos.ports import ProductosUnitOfWork
from productos.services.productos.repository import SqlProductosUnitOfWork
from productos.services.productos.routes import SERVICE_STATE_KEY, router
from productos.services.productos.service import ProductoService
from productos.settings import Settings

__all__ = ["MIGRATIONS", "app", "create_app", "productos_state", "unit_of_work_factory"]

#: The products service's migrations (the version table keeps Alembic's default name, as deployed databases have).
MIGRATIONS = Migrations("productos.services.productos:migrations")


def unit_of_work_factory(
    engine: AsyncEngine, *, acquire_timeout: float | None = None, replica: ReadReplica | None = None
) -> UnitOfWorkFactory[ProductosUnitOfWork]:
    """The products units of work on ``engine`` (statements on the pooled asyncpg connection for PostgreSQL,
    through SQLAlchemy on the embedded SQLite default).

    Args:
        engine: the process' engine.
        acquire_timeout: bound, in seconds, on getting a usable connection (pool wait, pre-ping, login).
        replica: the read replica (``runtime.replica``): read-only units (``GET /productos``,
            ``GET /productos/{id}``) read from it while it serves reads.
    """
    return SqlProductosUnitOfWork.factory(engine, acquire_timeout=acquire_timeout, replica=replica)


def productos_state(runtime: Runtime) -> dict[str, Any]:
    """The service's objects on ``runtime``, for the app's lifespan state."""
    units = unit_of_work_factory(
        runtime.engine, acquire_timeout=runtime.settings.db_pool_timeout, replica=runtime.replica
    )
    return {SERVICE_STATE_KEY: ProductoService(units)}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the products service.

    Args:
        settings: the service's settings. When omitted they are loaded when the app starts, in each worker:
            importing the app reads no configuration and opens no connection.
    """
    return create_service(
        title="productos-api",
        description="Products API of productos: CRUD over async repositories, health probes.",
        routers=[router],
        settings=settings,
        migrations=[MIGRATIONS],
        state=productos_state,
    )


app = create_app()
