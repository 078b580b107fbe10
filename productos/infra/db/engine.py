"""One async engine per process, configured from ``Settings``: pool, timeouts and SQLite pragmas."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from productos.infra.db.url import DatabaseTarget, parse_database_url
from productos.settings import Settings

#: Statements compiled once and reused for the process' life; asyncpg also prepares each one per connection.
_ASYNCPG_STATEMENT_CACHE = 512


def create_engine(settings: Settings) -> AsyncEngine:
    """Create the engine. Connects lazily: nothing here needs the database to be up."""
    target = parse_database_url(settings.database_url.get_secret_value())
    if target.dialect == "sqlite":
        return _sqlite_engine(target)
    return _postgres_engine(target, settings)


def _postgres_engine(target: DatabaseTarget, settings: Settings) -> AsyncEngine:
    statement_ms = int(settings.db_statement_timeout * 1000)
    connect_args: dict[str, Any] = {
        **target.connect_args,
        "timeout": settings.db_connect_timeout,
        # Client-side bound on every command: a hung server (not just a slow query) cannot hold a request.
        "command_timeout": settings.db_statement_timeout,
        "statement_cache_size": _ASYNCPG_STATEMENT_CACHE,
    }
    server_settings = dict(connect_args.get("server_settings", {}))
    server_settings.setdefault("application_name", settings.service_name)
    server_settings["statement_timeout"] = str(statement_ms)
    server_settings["idle_in_transaction_session_timeout"] = str(max(statement_ms * 2, 10_000))
    connect_args["server_settings"] = server_settings
    return create_async_engine(
        target.url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_recycle=settings.db_pool_recycle,
        pool_pre_ping=True,
        pool_use_lifo=True,
        connect_args=connect_args,
    )


def _sqlite_engine(target: DatabaseTarget) -> AsyncEngine:
    database = target.url.database
    in_memory = not database or database == ":memory:"
    engine = create_async_engine(
        target.url,
        # An in-memory database lives as long as its one connection: share that connection.
        **({"poolclass": StaticPool} if in_memory else {"pool_pre_ping": True}),
        connect_args={"timeout": 30, "check_same_thread": False},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine
