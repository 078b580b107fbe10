"""Run Alembic migrations shipped inside a package, safely from many processes at once, and make the service's
row-only login (``productos.infra.db.roles``) as the schema owner."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from productos.domain.errors import DatabaseUnavailableError
from productos.infra.db.engine import transactional
from productos.infra.db.roles import RowRole, RowRoleReport, advisory_lock, grant_row_role
from productos.infra.db.uow import domain_error

if TYPE_CHECKING:
    # Alembic is imported when migrations run, not with the service: a worker that never migrates
    # (PostgreSQL, where `productos migrate` does) does not load it (bench/README.md, memory).
    from alembic.config import Config

__all__ = ["Migrations", "alembic_config", "run_migrations", "upgrade_to_head", "wait_for_database"]

logger = logging.getLogger(__name__)

#: ``wait_for_database``'s pauses between attempts: doubling from the first, never longer than the last.
_FIRST_PAUSE, _LONGEST_PAUSE = 0.5, 15.0
#: SQLSTATEs no wait cures: a refused login (class 28), a database that does not exist (3D000).
_NOT_WORTH_WAITING = ("28", "3D000")


@dataclass(frozen=True)
class Migrations:
    """A service's Alembic migrations: a ``package:folder`` script location and its own version table.

    Each service keeps its own version table, so several services can share one database.
    """

    script_location: str
    version_table: str = "alembic_version"


def run_migrations(target_metadata: MetaData | None = None) -> None:
    """The body of a service's Alembic ``env.py``: migrate on the connection ``upgrade_to_head`` passes.

    A service built on productos ships ``<package>/migrations/env.py`` with just::

        from mypackage.tables import metadata
        from productos.migrations import run_migrations

        run_migrations(metadata)
    """
    from alembic import context

    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `productos migrate` (productos.migrations.upgrade_to_head)")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        version_table=context.config.attributes.get("version_table", "alembic_version"),
    )
    with context.begin_transaction():
        context.run_migrations()


def alembic_config(script_location: str, version_table: str = "alembic_version") -> Config:
    """An Alembic config that needs no alembic.ini: works after a non-editable ``pip install``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["version_table"] = version_table
    return config


async def upgrade_to_head(
    engine: AsyncEngine,
    *,
    script_location: str,
    version_table: str = "alembic_version",
    row_role: RowRole | None = None,
    wait: float = 0.0,
) -> RowRoleReport | None:
    """Upgrade the database of ``engine`` to the newest revision of ``script_location``.

    Concurrent callers (several gunicorn workers, several instances booting) are serialised: a PostgreSQL
    advisory lock, or a file lock beside the SQLite file. Other services pass their own ``script_location``
    (``"package:folder"``) and ``version_table``.

    Args:
        engine: the schema owner's engine (``DATABASE_MIGRATE_URL``'s, ``open_migration_engine``).
        script_location: the service's migrations, ``"package:folder"``.
        version_table: the service's Alembic version table.
        row_role: on PostgreSQL, the login the service runs as (``RowRole.from_settings``): created if missing and
            granted row access to the migrated tables, in the migration's transaction. Ignored on SQLite.
        wait: seconds to wait for the database to accept a connection first (``wait_for_database``).

    Returns:
        What was done for ``row_role``, or ``None`` without one.
    """
    config = alembic_config(script_location, version_table)
    # DDL and the advisory lock need a real transaction, not the pool's autocommit.
    engine = transactional(engine)
    if wait > 0:
        await wait_for_database(engine, wait)

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        from alembic import command

        command.upgrade(config, "head")

    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            lock_path = Path(database).with_suffix(Path(database).suffix + ".migrate-lock")
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            with lock_path.open("a") as lock_file:
                await asyncio.to_thread(fcntl.flock, lock_file, fcntl.LOCK_EX)
                try:
                    async with engine.begin() as conn:
                        await conn.run_sync(run)
                finally:
                    fcntl.flock(lock_file, fcntl.LOCK_UN)
            return None
        async with engine.begin() as conn:
            await conn.run_sync(run)
        return None

    lock_key = zlib.crc32(f"{script_location}/{version_table}".encode())
    async with engine.begin() as conn:
        await advisory_lock(conn, lock_key, what=f"migration of {script_location}")
        await conn.run_sync(run)
        if row_role is None:
            return None
        return await grant_row_role(conn, row_role, version_table=version_table)


async def wait_for_database(engine: AsyncEngine, timeout: float) -> None:
    """Return once ``engine``'s database accepts a connection, trying for up to ``timeout`` seconds.

    For a database that is still coming up (an instance booting beside a restarting or failing-over RDS): each
    failure to connect is logged and tried again after a pause that doubles from 0.5 s up to 15 s. A refused login
    or a database that does not exist fails at once: waiting does not cure them.

    Raises:
        DatabaseUnavailableError: still unreachable after ``timeout`` seconds (its ``reason`` says why).
        Exception: any other failure, as it is.
    """
    deadline = time.monotonic() + timeout
    for attempt, pause in enumerate(_pauses(), start=1):
        try:
            async with engine.connect():
                if attempt > 1:
                    logger.info("the database accepts connections", extra={"attempts": attempt})
                return
        except Exception as exc:
            failure = domain_error(exc)
            if not isinstance(failure, DatabaseUnavailableError) or _sqlstate_of(exc).startswith(_NOT_WORTH_WAITING):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise failure from exc
            pause = min(pause, left)
            # The reason names the driver's error and SQLSTATE, never a host or a password.
            logger.warning(
                "the database is not reachable yet (%s); trying again in %.1f s (%.0f s left)",
                failure.reason or "no reason given",
                pause,
                left,
            )
        await asyncio.sleep(pause)


def _pauses() -> Iterator[float]:
    pause = _FIRST_PAUSE
    while True:
        yield pause
        pause = min(pause * 2, _LONGEST_PAUSE)


def _sqlstate_of(exc: BaseException) -> str:
    seen: BaseException | None = exc
    while seen is not None:
        state = getattr(getattr(seen, "orig", None), "sqlstate", None) or getattr(seen, "sqlstate", None)
        if isinstance(state, str):
            return state
        seen = seen.__cause__
    return ""
