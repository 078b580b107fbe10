"""Run Alembic migrations shipped inside a package, safely from many processes at once."""

from __future__ import annotations

import asyncio
import fcntl
import zlib
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine

from productos.infra.db.engine import transactional

__all__ = ["Migrations", "alembic_config", "run_migrations", "upgrade_to_head"]


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
    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["version_table"] = version_table
    return config


async def upgrade_to_head(
    engine: AsyncEngine,
    *,
    script_location: str,
    version_table: str = "alembic_version",
) -> None:
    """Upgrade the database of ``engine`` to the newest revision of ``script_location``.

    Concurrent callers (several gunicorn workers, several instances booting) are serialised: a PostgreSQL
    advisory lock, or a file lock beside the SQLite file. Other services pass their own ``script_location``
    (``"package:folder"``) and ``version_table``.
    """
    config = alembic_config(script_location, version_table)
    # DDL and the advisory lock need a real transaction, not the pool's autocommit.
    engine = transactional(engine)

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
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
            return
        async with engine.begin() as conn:
            await conn.run_sync(run)
        return

    lock_key = zlib.crc32(f"{script_location}/{version_table}".encode())
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key})
        await conn.run_sync(run)
