"""Scratch PostgreSQL databases for integration tests, migrated with the shipped ``productos migrate``."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

ADMIN_URL = os.environ.get("DATABASE_URL_TEST", "postgresql://postgres@127.0.0.1:5432/test")


def _url_for(database: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


async def _admin(statement: str) -> None:
    try:
        conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"PostgreSQL is required for these tests and is not reachable at {ADMIN_URL} ({exc!r}); "
            "start it (see .ci/run) or set DATABASE_URL_TEST"
        ) from exc
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def scratch_database(workdir: Path) -> Iterator[str]:
    """Create a database, migrate it with ``productos migrate`` in a subprocess, yield its URL, drop it."""
    import asyncio

    name = f"productos_it_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = _url_for(name)
    try:
        # From a scratch directory, so the installed package (and its shipped migrations) is what runs.
        subprocess.run(
            [sys.executable, "-m", "productos", "migrate"],
            cwd=workdir,
            env={**os.environ, "DATABASE_URL": url},
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
