"""Composition root: the one place that turns ``Settings`` into adapters.

The container opens in the FastAPI lifespan (in each worker, after gunicorn forks) and closes on shutdown;
nothing here runs at import time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from productos.domain.ports import HealthProbe, UnitOfWorkFactory
from productos.infra.db.engine import create_engine
from productos.infra.db.migrate import upgrade_to_head
from productos.infra.db.repository import SqlAlchemyHealthProbe, SqlAlchemyUnitOfWorkFactory
from productos.services.productos import ProductService
from productos.settings import Settings

logger = logging.getLogger("productos.bootstrap")


@dataclass(frozen=True)
class Container:
    """Everything a request needs, built once per process."""

    settings: Settings
    engine: AsyncEngine
    uow_factory: UnitOfWorkFactory
    health: HealthProbe
    productos: ProductService


@asynccontextmanager
async def open_container(settings: Settings) -> AsyncIterator[Container]:
    """Create the engine and the services; dispose the engine's pool on exit."""
    engine = create_engine(settings)
    try:
        if settings.should_migrate_on_start:
            await upgrade_to_head(engine)
        uow_factory = SqlAlchemyUnitOfWorkFactory(engine, acquire_timeout=settings.db_pool_timeout)
        yield Container(
            settings=settings,
            engine=engine,
            uow_factory=uow_factory,
            health=SqlAlchemyHealthProbe(engine),
            productos=ProductService(uow_factory),
        )
    finally:
        await engine.dispose()
