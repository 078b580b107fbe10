"""One fixture, four backends: every contract test runs against the fake, SQLite, and PostgreSQL through both
repositories (SQLAlchemy Core, and SQL on the asyncpg connection that the products service uses there)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from productos.domain import UnitOfWorkFactory
from productos.services.productos.asyncpg_repository import AsyncpgUnitOfWorkFactory
from productos.services.productos.repository import SqlAlchemyUnitOfWorkFactory
from productos.services.productos.testing import InMemoryUnitOfWorkFactory

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("postgres-core", id="postgres-core", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def uow_factory(backend: str, request: pytest.FixtureRequest) -> UnitOfWorkFactory:
    if backend == "memory":
        return InMemoryUnitOfWorkFactory()
    if backend == "sqlite":
        engine: AsyncEngine = request.getfixturevalue("sqlite_engine")
    else:
        request.getfixturevalue("clean_postgres")
        engine = request.getfixturevalue("postgres_engine")
    if backend == "postgres":
        return AsyncpgUnitOfWorkFactory(engine)
    return SqlAlchemyUnitOfWorkFactory(engine)
