"""Statements on the pooled asyncpg connection (``productos.infra.db.driver``) on a real PostgreSQL: errors,
transactions, and what happens to a connection after each kind of failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from productos.domain.errors import ConflictError, DatabaseUnavailableError
from productos.infra.db.driver import DriverConnection, DriverUnitOfWorkBase, add_statement_listener
from productos.infra.db.engine import create_engine
from tests.conftest import make_settings

pytestmark = pytest.mark.postgres

_INSERT = (
    "INSERT INTO productos (nombre, precio, stock, version, created_at, updated_at) "
    "VALUES ($1, $2, 0, 1, now(), now()) RETURNING id"
)


class Unit(DriverUnitOfWorkBase):
    connection: DriverConnection

    def _bind(self, connection: DriverConnection) -> None:
        self.connection = connection


@pytest.fixture
async def engine(clean_postgres: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(make_settings(clean_postgres, db_statement_timeout=0.5))
    yield engine
    await engine.dispose()


async def _backend_pid(engine: AsyncEngine) -> int:
    async with Unit(engine, read_only=True) as unit:
        pid: int = await unit.connection.fetchval("SELECT pg_backend_pid()")
    return pid


async def _count(engine: AsyncEngine) -> int:
    async with Unit(engine, read_only=True) as unit:
        count: int = await unit.connection.fetchval("SELECT count(*) FROM productos")
    return count


async def test_a_transactional_unit_commits_once_and_rolls_back_without_commit(engine: AsyncEngine) -> None:
    async with Unit(engine) as unit:
        assert unit.connection.in_transaction()
        await unit.connection.fetchval(_INSERT, "a", 1)
    assert await _count(engine) == 0
    async with Unit(engine) as unit:
        await unit.connection.fetchval(_INSERT, "a", 1)
        await unit.connection.fetchval(_INSERT, "b", 1)
        await unit.commit()
        assert not unit.connection.in_transaction()
    assert await _count(engine) == 2


async def test_an_autocommit_unit_commits_each_statement_as_it_runs(engine: AsyncEngine) -> None:
    async with Unit(engine, autocommit=True) as unit:
        assert not unit.connection.in_transaction()
        await unit.connection.fetchval(_INSERT, "a", 1)
        assert await _count(engine) == 1  # seen by another connection before this unit ends
    assert await _count(engine) == 1


async def test_commit_after_a_failed_statement_refuses_to_pretend(engine: AsyncEngine) -> None:
    async with Unit(engine) as unit:
        await unit.connection.fetchval(_INSERT, "a", 1)
        with pytest.raises(ConflictError):  # CHECK (precio > 0)
            await unit.connection.fetchval(_INSERT, "b", 0)
        # PostgreSQL would answer this COMMIT with ROLLBACK: the unit must not report success.
        with pytest.raises(RuntimeError, match="nothing was committed"):
            await unit.commit()
    assert await _count(engine) == 0
    async with Unit(engine, read_only=True) as unit:  # and the connection went back to the pool clean
        assert not unit.connection.in_transaction()


async def test_errors_become_domain_errors_and_keep_the_connection_when_it_is_sound(engine: AsyncEngine) -> None:
    pid = await _backend_pid(engine)
    async with Unit(engine, read_only=True) as unit:
        # The server's statement_timeout, well before asyncpg's own command timeout (0.5 s) would cancel it.
        await unit.connection.execute("SET statement_timeout = 100")
        with pytest.raises(DatabaseUnavailableError) as raised:  # SQLSTATE 57014
            await unit.connection.fetchval("SELECT pg_sleep(2)")
        assert isinstance(raised.value.__cause__, asyncpg.QueryCanceledError)
        with pytest.raises(asyncpg.PostgresSyntaxError):  # a bug in the SQL stays what it is
            await unit.connection.fetchval("SELEC 1")
        assert not unit.connection.failed
    assert await _backend_pid(engine) == pid  # the same pooled connection, reused


async def test_a_statement_cancelled_midway_invalidates_its_connection(engine: AsyncEngine) -> None:
    pid = await _backend_pid(engine)
    async with Unit(engine, read_only=True) as unit:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await unit.connection.fetchval("SELECT pg_sleep(0.3)")
        assert unit.connection.failed
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    new_pid = await _backend_pid(engine)
    assert new_pid != pid  # its reply might still have been on the way: not reused
    admin = await asyncpg.connect(engine.url.render_as_string(hide_password=False).replace("+asyncpg", ""))
    try:
        for _ in range(50):
            if not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the invalidated connection was left open")
    finally:
        await admin.close()


async def test_every_statement_reaches_the_listeners_with_its_outcome(engine: AsyncEngine) -> None:
    heard: list[tuple[str, bool]] = []
    add_statement_listener(engine, lambda statement, elapsed, error: heard.append((statement, error is None)))
    async with Unit(engine) as unit:
        await unit.connection.fetchval(_INSERT, "a", 1)
        await unit.commit()
    async with Unit(engine, read_only=True) as unit:
        with pytest.raises(asyncpg.PostgresSyntaxError):
            await unit.connection.fetchval("SELEC 1")
    assert heard == [
        ("BEGIN ISOLATION LEVEL READ COMMITTED", True),
        (_INSERT, True),
        ("COMMIT", True),
        ("SELEC 1", False),
    ]


async def test_a_refused_connection_is_database_unavailable() -> None:
    engine = create_engine(make_settings("postgresql://postgres@127.0.0.1:1/test"))
    try:
        with pytest.raises(DatabaseUnavailableError) as raised:
            async with Unit(engine, read_only=True):
                pass
        assert "127.0.0.1" not in str(raised.value)
    finally:
        await engine.dispose()
