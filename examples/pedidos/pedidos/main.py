"""ASGI entry point: ``gunicorn -c python:productos.gunicorn_conf pedidos.main:app``."""

from __future__ import annotations

from functools import partial
from typing import Any

from pedidos.api import router
from pedidos.repository import PedidosUnitOfWork
from pedidos.service import PedidoService
from productos import Migrations, Runtime, Settings, create_service

MIGRATIONS = Migrations("pedidos:migrations", version_table="pedidos_alembic_version")


def _state(runtime: Runtime) -> dict[str, Any]:
    unit_of_work = partial(PedidosUnitOfWork, runtime.engine, acquire_timeout=runtime.settings.db_pool_timeout)
    return {"pedidos": PedidoService(unit_of_work)}


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
