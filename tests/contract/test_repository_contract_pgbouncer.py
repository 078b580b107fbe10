"""The repository contract suite again, through a real PgBouncer in transaction pooling mode (Debian's package,
its default settings otherwise) with ``DB_POOLER=transaction``.

Both ways a unit of work reaches PostgreSQL run it: the statement toolkit on the pooled asyncpg connection (what
services use) and SQLAlchemy's own execution (``SqlAlchemyUnitOfWorkBase``). The engine keeps more connections
to PgBouncer than PgBouncer keeps to PostgreSQL, so the suite's concurrent units share server connections: a
named prepared statement or a session setting that outlived its transaction would meet another client's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from productos.infra.db.engine import create_engine
from productos.testing import PgBouncer
from tests.conftest import make_settings, truncate_all
from tests.contract import test_repository_contract as suite
from tests.integration.unit_paths import PATHS

pytestmark = pytest.mark.postgres

# Every test of the suite, collected here again: in this module they take this module's ``uow_factory``.
globals().update({name: test for name, test in vars(suite).items() if name.startswith("test_")})

#: PgBouncer's server connections to the database, and the engine's client connections to PgBouncer.
SERVER_CONNECTIONS = 2
CLIENT_CONNECTIONS = 6


@pytest.fixture(scope="module")
def bouncer(postgres_url: str) -> Iterator[PgBouncer]:
    with PgBouncer(postgres_url, pool_size=SERVER_CONNECTIONS) as bouncer:
        yield bouncer


@pytest.fixture(scope="module")
async def pooled_engine(bouncer: PgBouncer, postgres_url: str) -> AsyncIterator[AsyncEngine]:
    url = bouncer.url(make_url(postgres_url).database or "")
    engine = create_engine(
        make_settings(url, db_pooler="transaction", db_pool_size=CLIENT_CONNECTIONS, db_max_overflow=0)
    )
    yield engine
    await engine.dispose()


@pytest.fixture(params=[factory for factory, _ in PATHS], ids=[name for _, name in PATHS])
async def uow_factory(
    request: pytest.FixtureRequest, pooled_engine: AsyncEngine, postgres_engine: AsyncEngine
) -> AsyncIterator[Any]:
    await truncate_all(postgres_engine)
    yield request.param(pooled_engine)
