"""ASGI entry point: ``gunicorn -c python:productos.gunicorn_conf pedidos.main:app``."""

from __future__ import annotations

from typing import Any

from pedidos.api import router
from pedidos.repository import SqlPedidosUnitOfWork
from pedidos.service import PedidoService
from productos import Settings
from productos.migrations import Migrations
from productos.runtime import Runtime, create_service

MIGRATIONS = Migrations("pedidos:migrations", version_table="pedidos_alembic_version")


def _state(runtime: Runtime) -> dict[str, Any]:
    units = SqlPedidosUnitOfWork.factory(runtime.engine, acquire_timeout=runtime.settings.db_pool_timeout)
    return {"pedidos": PedidoService(units)}


def create_app(settings: Settings | None = None) -> Any:
    return create_service(
        title="pedidos-api",
        description="Orders that reference products by id; built on productos.",
        routers=[router],
        settings=settings,
        migrations=[MIGRATIONS],
        state=_state,
    )


app = create_app()
