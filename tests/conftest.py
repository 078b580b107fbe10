"""Fixtures shared by every test suite: real databases, migrated with the real Alembic migrations.

PostgreSQL: ``DATABASE_URL_TEST`` (default ``postgresql://postgres@127.0.0.1:5432/test``) names a server and a
database to connect to; each test session creates its own database beside it, migrates it to head, and drops
it at the end. A test that needs PostgreSQL fails, never skips, when the server is unreachable.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from productos.infra.db.engine import create_engine
from productos.migrations import upgrade_to_head
from productos.services.productos.app import MIGRATIONS
from productos.settings import Settings

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for tests: explicit values only, so they win over any environment."""
    return Settings(database_url=database_url, **overrides)


def _asyncpg_dsn(url: str) -> str:
    """asyncpg takes libpq-style URLs only: drop a SQLAlchemy driver suffix (``postgresql+asyncpg``)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """URL of a fresh PostgreSQL database for this test session, migrated to head."""
    server_url = os.environ.get("DATABASE_URL_TEST") or DEFAULT_POSTGRES_URL
    safe = make_url(server_url).render_as_string(hide_password=True)
    problem = ""
    try:
        admin = await asyncpg.connect(_asyncpg_dsn(server_url), timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        pytest.fail(
            f"PostgreSQL is unreachable at {safe} ({problem}). "
            "Start it, or point DATABASE_URL_TEST at a reachable server.",
            pytrace=False,
        )
    name = f"productos_test_{secrets.token_hex(6)}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
        engine = create_engine(make_settings(url))
        try:
            await upgrade_to_head(engine, script_location=MIGRATIONS.script_location)
        finally:
            await engine.dispose()
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
async def postgres_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(make_settings(postgres_url))
    yield engine
    await engine.dispose()


async def truncate_all(engine: AsyncEngine) -> None:
    """Empty every application table and restart identities (Alembic's bookkeeping stays)."""
    async with engine.begin() as conn:
        result = await conn.execute(
            text(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'alembic_version'"
            )
        )
        tables = ", ".join(f'"{row.tablename}"' for row in result)
        if tables:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
async def clean_postgres(postgres_url: str, postgres_engine: AsyncEngine) -> str:
    """The session's PostgreSQL URL, with every table emptied before the test."""
    await truncate_all(postgres_engine)
    return postgres_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file of its own for the test (not migrated: the app migrates the embedded default itself)."""
    return f"sqlite:///{tmp_path / 'productos.db'}"


@pytest.fixture
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a migrated SQLite file of the test's own."""
    engine = create_engine(make_settings(sqlite_url))
    try:
        await upgrade_to_head(engine, script_location=MIGRATIONS.script_location)
        yield engine
    finally:
        await engine.dispose()
