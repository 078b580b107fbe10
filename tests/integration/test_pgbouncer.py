"""Units of work through a real PgBouncer in transaction pooling mode (Debian's package, default settings but
the pool mode) with ``DB_POOLER=transaction``: the session limits hold in every unit and nowhere else, nothing is
left on a server connection that another client could meet, and migrations go to ``DATABASE_MIGRATE_URL``.

Without ``DB_POOLER=transaction`` PgBouncer refuses the login, and ``productos check`` and ``productos migrate``
name the setting.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from productos.db import SqlAlchemyUnitOfWorkBase, SqlConnection, SqlUnitOfWork
from productos.domain.errors import ConcurrentUpdateError, DatabaseUnavailableError
from productos.entrypoints.check import pooler_hint
from productos.infra.db.engine import create_engine
from productos.infra.db.statements import SqlAlchemySqlConnection
from productos.runtime import open_runtime
from productos.services.productos.app import MIGRATIONS
from productos.settings import settings_from_values
from productos.testing import PgBouncer
from tests.conftest import make_settings
from tests.integration.pg import ADMIN_URL

pytestmark = pytest.mark.postgres


class DriverUnit(SqlUnitOfWork):
    """Statements on the pooled asyncpg connection (on PostgreSQL, ``SqlUnitOfWork`` is the toolkit's path)."""

    sql: SqlConnection

    def _bind(self, connection: SqlConnection) -> None:
        self.sql = connection


class CoreUnit(SqlAlchemyUnitOfWorkBase):
    """The same statements through SQLAlchemy's execution."""

    sql: SqlConnection

    def _bind(self, connection: AsyncConnection) -> None:
        self.sql = SqlAlchemySqlConnection(connection)


UNITS = [pytest.param(DriverUnit, id="asyncpg-driver"), pytest.param(CoreUnit, id="sqlalchemy-core")]
KINDS = [
    pytest.param({"read_only": True}, id="read-only"),
    pytest.param({"autocommit": True}, id="autocommit"),
    pytest.param({}, id="transactional"),
]
Unit = Callable[..., Any]


@pytest.fixture(scope="module")
def bouncer(postgres_url: str) -> Iterator[PgBouncer]:
    # One server connection: every client's transactions take turns on it.
    with PgBouncer(postgres_url, pool_size=1) as bouncer:
        yield bouncer


@pytest.fixture
def pooled_url(bouncer: PgBouncer, clean_postgres: str) -> str:
    return bouncer.url(make_url(clean_postgres).database or "")


@pytest.fixture
async def pooled(pooled_url: str) -> AsyncIterator[Callable[..., AsyncEngine]]:
    """Engines through PgBouncer with ``DB_POOLER=transaction`` (and the given settings), disposed at the end."""
    engines: list[AsyncEngine] = []

    def make(**overrides: Any) -> AsyncEngine:
        values = {"db_pooler": "transaction", "db_pool_size": 3, "db_max_overflow": 0, **overrides}
        engines.append(create_engine(make_settings(pooled_url, **values)))
        return engines[-1]

    yield make
    for engine in engines:
        await engine.dispose()


async def _setting(unit: Any, name: str) -> str:
    value: str = await unit.sql.fetch_value(text(f"SELECT setting FROM pg_settings WHERE name = '{name}'"))
    return value


async def _session_setting(url: str, name: str) -> str:
    """``name`` on a connection through PgBouncer, outside any transaction."""
    conn = await asyncpg.connect(url, statement_cache_size=0)
    try:
        value: str = await conn.fetchval(f"SELECT setting FROM pg_settings WHERE name = '{name}'")
        return value
    finally:
        await conn.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("unit", UNITS)
async def test_every_unit_runs_in_a_transaction_under_the_session_limits(
    pooled: Callable[..., AsyncEngine], pooled_url: str, unit: Unit, kind: dict[str, bool]
) -> None:
    engine = pooled(db_statement_timeout=3, db_lock_timeout=0.25)
    for _ in range(3):  # on new connections and on pooled ones
        async with unit(engine, **kind) as uow:
            # Two statements, one transaction: now() is the transaction's start (in autocommit, each statement's).
            first = await uow.sql.fetch_value(text("SELECT now()"))
            assert await uow.sql.fetch_value(text("SELECT now()")) == first
            assert await _setting(uow, "statement_timeout") == "2700"
            assert await _setting(uow, "lock_timeout") == "250"
            assert await _setting(uow, "idle_in_transaction_session_timeout") == "10000"
            await uow.commit()
    # SET LOCAL: the server connection the units ran on is back to the server's defaults.
    assert await _session_setting(pooled_url, "statement_timeout") == "0"
    assert await _session_setting(pooled_url, "lock_timeout") == "0"


@pytest.mark.parametrize("unit", UNITS)
async def test_the_server_cancels_a_statement_past_its_timeout(pooled: Callable[..., AsyncEngine], unit: Unit) -> None:
    engine = pooled(db_statement_timeout=0.5)
    with pytest.raises(DatabaseUnavailableError) as caught:
        async with unit(engine, read_only=True) as uow:
            await uow.sql.fetch_value(text("SELECT pg_sleep(2)"))
    # The server's statement_timeout (450 ms, SQLSTATE 57014), before asyncpg's own 500 ms bound.
    assert caught.value.reason is not None and "57014" in caught.value.reason, caught.value.reason
    async with unit(engine, read_only=True) as uow:  # and the pool serves again
        assert await uow.sql.fetch_value(text("SELECT 1")) == 1


@pytest.mark.parametrize("unit", UNITS)
async def test_a_row_held_by_another_transaction_fails_fast_with_lock_timeout(
    pooled: Callable[..., AsyncEngine], clean_postgres: str, unit: Unit
) -> None:
    engine = pooled(db_statement_timeout=5, db_lock_timeout=0.2)
    holder = await asyncpg.connect(clean_postgres)
    try:
        row_id = await holder.fetchval(
            "INSERT INTO productos (nombre, precio, stock, version, created_at, updated_at) "
            "VALUES ('x', 1, 0, 1, now(), now()) RETURNING id"
        )
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM productos WHERE id = $1 FOR UPDATE", row_id)
            with pytest.raises(ConcurrentUpdateError):
                async with unit(engine, autocommit=True) as uow:
                    await uow.sql.execute(text("UPDATE productos SET stock = 1 WHERE id = :id"), {"id": row_id})
    finally:
        await holder.close()


@pytest.mark.parametrize("unit", UNITS)
async def test_autocommit_and_read_only_units_keep_what_they_ran_and_transactional_ones_need_commit(
    pooled: Callable[..., AsyncEngine], unit: Unit
) -> None:
    engine = pooled()
    insert = text(
        "INSERT INTO productos (nombre, precio, stock, version, created_at, updated_at) "
        "VALUES (:nombre, 1, 0, 1, now(), now())"
    )
    for nombre, kind in (("autocommit", {"autocommit": True}), ("read-only", {"read_only": True}), ("tx", {})):
        async with unit(engine, **kind) as uow:
            await uow.sql.execute(insert, {"nombre": nombre})  # and no commit()
    async with unit(engine, read_only=True) as uow:
        rows = await uow.sql.fetch_all(text("SELECT nombre FROM productos ORDER BY id"))
    assert [row.nombre for row in rows] == ["autocommit", "read-only"]


async def test_no_named_prepared_statement_stays_on_the_server_connection(
    pooled: Callable[..., AsyncEngine],
) -> None:
    engine = pooled()
    for unit in (DriverUnit, CoreUnit):
        for kind in ({"read_only": True}, {"autocommit": True}, {}):
            async with unit(engine, **kind) as uow:
                await uow.sql.fetch_all(text("SELECT id FROM productos WHERE id > :after"), {"after": 0})
                await uow.commit()
    # PgBouncer has one server connection: every unit above ran on the one this one runs on.
    async with DriverUnit(engine, read_only=True) as uow:
        assert await uow.sql.fetch_all(text("SELECT name FROM pg_prepared_statements")) == []


@pytest.mark.parametrize("unit", UNITS)
async def test_a_column_whose_type_changed_is_read_with_its_new_type(
    pooled: Callable[..., AsyncEngine], clean_postgres: str, unit: Unit
) -> None:
    engine = pooled(db_pool_size=1)  # one client connection: whatever it cached is used again
    table = f"t_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(clean_postgres)
    try:
        await admin.execute(f"CREATE TABLE {table} (v bigint); INSERT INTO {table} VALUES (1)")
        select = text(f"SELECT v FROM {table}")
        for _ in range(2):
            async with unit(engine, read_only=True) as uow:
                assert await uow.sql.fetch_value(select) == 1
        await admin.execute(f"ALTER TABLE {table} ALTER v TYPE double precision USING v::double precision")
        async with unit(engine, read_only=True) as uow:
            value = await uow.sql.fetch_value(select)
        assert value == 1.0 and isinstance(value, float)
    finally:
        await admin.execute(f"DROP TABLE IF EXISTS {table}")
        await admin.close()


async def test_without_db_pooler_pgbouncer_refuses_the_login_with_a_hint(pooled_url: str) -> None:
    engine = create_engine(make_settings(pooled_url))
    try:
        with pytest.raises(DatabaseUnavailableError) as caught:
            async with DriverUnit(engine, read_only=True) as uow:
                await uow.sql.fetch_value(text("SELECT 1"))
    finally:
        await engine.dispose()
    hint = pooler_hint(caught.value)
    assert hint is not None and "DB_POOLER=transaction" in hint


# --- the command line: check and migrate ------------------------------------------------------------------------


def _run(command: str, workdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "DB_", "PRODUCTOS_"))}
    return subprocess.run(
        [sys.executable, "-m", "productos", command, *(["--json"] if command == "check" else [])],
        cwd=workdir,
        env={**base, "DB_CONNECT_TIMEOUT": "2", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _steps(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in json.loads(result.stdout)["checks"]}


def test_check_through_pgbouncer(tmp_path: Path, pooled_url: str) -> None:
    refused = _run("check", tmp_path, DATABASE_URL=pooled_url)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    login = _steps(refused)["login"]
    assert not login["ok"] and "unsupported startup parameter" in login["detail"]
    assert "DB_POOLER=transaction" in login["hint"] and "timed out" not in login["hint"]

    passed = _run("check", tmp_path, DATABASE_URL=pooled_url, DB_POOLER="transaction")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    limits = _steps(passed)["limits"]
    assert limits["ok"] and limits["detail"].endswith("set per transaction (DB_POOLER=transaction)")


def test_check_names_db_pooler_when_a_pooler_drops_the_login_settings(tmp_path: Path, clean_postgres: str) -> None:
    ignoring = {"ignore_startup_parameters": "statement_timeout,lock_timeout,idle_in_transaction_session_timeout"}
    with PgBouncer(clean_postgres, pool_size=1, settings=ignoring) as lenient:
        result = _run("check", tmp_path, DATABASE_URL=lenient.url(make_url(clean_postgres).database or ""))
    assert result.returncode == 1, result.stdout + result.stderr
    steps = _steps(result)
    assert steps["login"]["ok"] and steps["query"]["ok"]
    assert not steps["limits"]["ok"] and "statement_timeout is 0 ms, not 4500 ms" in steps["limits"]["detail"]
    assert "DB_POOLER=transaction" in steps["limits"]["hint"]


@pytest.fixture
async def owned_database() -> AsyncIterator[tuple[str, str]]:
    """An empty database owned by a role of its own (the schema owner): (database, owner)."""
    suffix = secrets.token_hex(4)
    database, owner = f"productos_owned_{suffix}", f"productos_owner_{suffix}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f"CREATE ROLE {owner} LOGIN")
        await admin.execute(f"CREATE DATABASE {database} OWNER {owner}")
        yield database, owner
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {owner}")
        await admin.close()


async def _owner_of_productos(database: str) -> str | None:
    conn = await asyncpg.connect(make_url(ADMIN_URL).set(database=database).render_as_string(hide_password=False))
    try:
        owner: str | None = await conn.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'productos'")
        return owner
    finally:
        await conn.close()


async def test_migrate_goes_to_database_migrate_url(
    tmp_path: Path, bouncer: PgBouncer, owned_database: tuple[str, str]
) -> None:
    database, owner = owned_database
    service_url = bouncer.url(database)  # the service's login, as postgres, through PgBouncer
    migrate_url = make_url(ADMIN_URL).set(database=database, username=owner).render_as_string(hide_password=False)

    refused = await asyncio.to_thread(_run, "migrate", tmp_path, DATABASE_URL=service_url)
    assert refused.returncode == 1
    assert "hint: a connection pooler" in refused.stderr and "DB_POOLER=transaction" in refused.stderr

    done = await asyncio.to_thread(
        _run, "migrate", tmp_path, DATABASE_URL=service_url, DB_POOLER="transaction", DATABASE_MIGRATE_URL=migrate_url
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert await _owner_of_productos(database) == owner


async def test_migrations_at_start_go_to_database_migrate_url(
    bouncer: PgBouncer, owned_database: tuple[str, str]
) -> None:
    database, owner = owned_database
    settings = settings_from_values(
        {
            "database_url": bouncer.url(database),
            "db_pooler": "transaction",
            "database_migrate_url": make_url(ADMIN_URL)
            .set(database=database, username=owner)
            .render_as_string(hide_password=False),
            "migrate_on_start": True,
            "db_pool_size": 1,
        }
    )
    async with (
        open_runtime(settings, migrations=[MIGRATIONS]) as runtime,
        DriverUnit(runtime.engine, read_only=True) as uow,
    ):
        assert await uow.sql.fetch_value(text("SELECT current_user")) == "postgres"
    assert await _owner_of_productos(database) == owner
