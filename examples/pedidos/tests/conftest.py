"""pedidos' tests: its repository contract on the in-memory fake, SQLite and PostgreSQL."""

from __future__ import annotations

from pedidos.main import MIGRATIONS
from pedidos.repository import SqlPedidosUnitOfWork
from pedidos.testing import InMemoryPedidosUnitOfWorkFactory

from productos.testing import contract_backends

units = contract_backends(
    memory=InMemoryPedidosUnitOfWorkFactory,
    sql=lambda engine: SqlPedidosUnitOfWork.factory(engine),
    migrations=[MIGRATIONS],
)
