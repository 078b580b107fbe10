"""One fixture, three backends: every contract test runs against the in-memory fake, SQLite and PostgreSQL
(the statements on the pooled asyncpg connection that the products service runs there)."""

from __future__ import annotations

from productos.services.productos.app import MIGRATIONS, unit_of_work_factory
from productos.services.productos.testing import InMemoryUnitOfWorkFactory
from productos.testing import contract_backends

uow_factory = contract_backends(memory=InMemoryUnitOfWorkFactory, sql=unit_of_work_factory, migrations=[MIGRATIONS])
