"""Run Alembic migrations shipped inside a package, safely from many processes at once."""

from __future__ import annotations

import asyncio
import fcntl
import zlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from productos.infra.db.engine import transactional

PRODUCTOS_MIGRATIONS = "productos.infra.db:migrations"


def alembic_config(script_location: str = PRODUCTOS_MIGRATIONS, version_table: str = "alembic_version") -> Config:
    """An Alembic config that needs no alembic.ini: works after a non-editable ``pip install``."""
    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["version_table"] = version_table
    return config


async def upgrade_to_head(
    engine: AsyncEngine,
    *,
    script_location: str = PRODUCTOS_MIGRATIONS,
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
