"""One repository contract, every backend: a pytest fixture that hands each test a unit-of-work factory on the
in-memory fake, on a migrated SQLite file and on a migrated PostgreSQL database in turn.

The in-memory fake must behave as the SQL adapters do, or unit tests on it prove nothing; running the same
tests on all three is how a service knows. In a service's ``tests/conftest.py``::

    from productos.testing import contract_backends

    units = contract_backends(
        memory=InMemoryPedidosUnitOfWorkFactory,
        sql=lambda engine: SqlPedidosUnitOfWork.factory(engine),
        migrations=[MIGRATIONS],
    )

Every test that takes ``units`` then runs three times (``[memory]``, ``[sqlite]``, ``[postgres]``).

PostgreSQL: ``DATABASE_URL_TEST`` (default ``postgresql://postgres@127.0.0.1:5432/test``) names the server; one
scratch database per test session and set of migrations is created beside it, migrated, emptied before each
test, and dropped at the end. A test fails, never skips, when the server is unreachable.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from productos.domain.ports import UnitOfWork, UnitOfWorkFactory
from productos.infra.db.migrate import Migrations, upgrade_to_head
from productos.runtime.bootstrap import open_engine
from productos.settings import settings_from_values

__all__ = ["DEFAULT_POSTGRES_URL", "contract_backends", "postgres_server_url"]

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

U = TypeVar("U", bound=UnitOfWork)
T = TypeVar("T")

#: Scratch databases made in this process, by migrations: created once, dropped when the session ends.
_databases: dict[tuple[Migrations, ...], str] = {}
_lock = threading.Lock()


def postgres_server_url() -> str:
    """The PostgreSQL server tests use: ``DATABASE_URL_TEST``, or the local default."""
    return os.environ.get("DATABASE_URL_TEST") or DEFAULT_POSTGRES_URL


def contract_backends(
    *,
    sql: Callable[[AsyncEngine], UnitOfWorkFactory[U]],
    migrations: Sequence[Migrations],
    memory: Callable[[], UnitOfWorkFactory[U]] | None = None,
    postgres: bool = True,
) -> Any:
    """A pytest fixture, parametrized over the backends, that yields a ``UnitOfWorkFactory`` on each.

    Args:
        sql: the service's SQL unit-of-work factory on an engine (``MyUnitOfWork.factory``).
        migrations: the service's migrations, applied to each database before its tests.
        memory: the service's in-memory fake factory, when it has one.
        postgres: also run on PostgreSQL (mark ``postgres`` is added, so ``-m "not postgres"`` deselects them).

    Returns:
        The fixture; assign it to a module-level name in a ``conftest.py`` (the name is the fixture's name).
    """
    params = [pytest.param("sqlite", id="sqlite")]
    if memory is not None:
        params.insert(0, pytest.param("memory", id="memory"))
    if postgres:
        params.append(pytest.param("postgres", id="postgres", marks=pytest.mark.postgres))
    wanted = tuple(migrations)

    @pytest.fixture(params=params)
    async def fixture(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[UnitOfWorkFactory[U]]:
        backend: str = request.param
        if backend == "memory":
            assert memory is not None
            yield memory()
            return
        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}"
        else:
            url = _scratch_database(wanted, request)
        async with open_engine(settings_from_values({"database_url": url, "db_pool_size": 2})) as engine:
            if backend == "sqlite":
                for migration in wanted:
                    await upgrade_to_head(
                        engine, script_location=migration.script_location, version_table=migration.version_table
                    )
            else:
                await _empty(engine, wanted)
            yield sql(engine)

    return fixture


def _scratch_database(migrations: tuple[Migrations, ...], request: pytest.FixtureRequest) -> str:
    with _lock:
        url = _databases.get(migrations)
        if url is None:
            url = _run(_create_database(migrations))
            _databases[migrations] = url
            request.session.config.add_cleanup(lambda: _run(_drop_database(url)))
    return url


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to the end on a loop of its own, in a thread: the caller may be inside a running loop."""
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name="productos-testing-admin")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


async def _admin_connection() -> Any:
    import asyncpg

    server = make_url(postgres_server_url())
    dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        return await asyncpg.connect(dsn, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        safe = server.render_as_string(hide_password=True)
        pytest.fail(
            f"PostgreSQL is unreachable at {safe} ({type(exc).__name__}: {exc}). "
            "Start it, or point DATABASE_URL_TEST at a reachable server.",
            pytrace=False,
        )


async def _create_database(migrations: tuple[Migrations, ...]) -> str:
    name = f"productos_contract_{secrets.token_hex(6)}"
    admin = await _admin_connection()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(postgres_server_url()).set(database=name).render_as_string(hide_password=False)
    async with open_engine(settings_from_values({"database_url": url, "db_pool_size": 1})) as engine:
        for migration in migrations:
            await upgrade_to_head(
                engine, script_location=migration.script_location, version_table=migration.version_table
            )
    return url


async def _drop_database(url: str) -> None:
    name = make_url(url).database
    admin = await _admin_connection()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _empty(engine: AsyncEngine, migrations: tuple[Migrations, ...]) -> None:
    """Empty every table of the public schema but the migrations' version tables; restart identities."""
    kept = {migration.version_table for migration in migrations}
    async with engine.begin() as conn:
        names = (await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).scalars()
        tables = [f'"{name}"' for name in names if name not in kept]
        if tables:
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
