"""One async engine per process, configured from ``Settings``: pool, timeouts and SQLite pragmas.

With a ``DatabaseCredentialsProvider`` (a rotating Secrets Manager secret, RDS IAM tokens), every new
connection asks it for its login; pooled connections stay logged in.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from productos.domain.errors import ConfigurationError
from productos.domain.settings_ports import DatabaseCredentials, DatabaseCredentialsProvider
from productos.infra.db.pool import install_idle_pre_ping
from productos.infra.db.url import DatabaseTarget, parse_database_url
from productos.settings import Settings

try:
    from sqlalchemy.util import await_
except ImportError:  # SQLAlchemy 2.0 names it await_only
    from sqlalchemy.util import await_only as await_

logger = logging.getLogger(__name__)

#: SQLSTATEs of a refused login: invalid_password, invalid_authorization_specification.
_AUTH_FAILURES = frozenset({"28P01", "28000"})

#: Connections leave the pool in autocommit: a read is its one statement, with no BEGIN/ROLLBACK around it or
#: around the pool's pre-ping (in transactional mode SQLAlchemy's asyncpg pre-ping costs three round trips).
#: Units of work that write switch their connection to ``TRANSACTIONAL_ISOLATION`` first.
POOL_ISOLATION = "AUTOCOMMIT"
TRANSACTIONAL_ISOLATION = {"postgresql": "READ COMMITTED", "sqlite": "SERIALIZABLE"}

#: Statements compiled once and reused for the process' life; asyncpg also prepares each one per connection.
_ASYNCPG_STATEMENT_CACHE = 512


def create_engine(settings: Settings, *, credentials: DatabaseCredentialsProvider | None = None) -> AsyncEngine:
    """Create the engine. Connects lazily: nothing here needs the database to be up.

    Args:
        settings: the service's settings.
        credentials: when given (PostgreSQL only), each new connection logs in with what it returns, and a
            refused login is retried once with ``after_auth_failure``'s credentials.
    """
    target = parse_database_url(settings.database_url.get_secret_value())
    if target.dialect == "sqlite":
        if credentials is not None:
            raise ConfigurationError("DB_IAM_AUTH and rotating secrets need a PostgreSQL DATABASE_URL")
        return _sqlite_engine(target)
    engine = _postgres_engine(target, settings)
    if credentials is not None:
        use_credentials(engine, credentials)
    return engine


def transactional(engine: AsyncEngine) -> AsyncEngine:
    """The same engine and pool, with connections in the database's normal transactional mode."""
    return engine.execution_options(isolation_level=TRANSACTIONAL_ISOLATION[engine.dialect.name])


def use_credentials(engine: AsyncEngine, provider: DatabaseCredentialsProvider) -> None:
    """Log every new connection of ``engine`` in with ``provider``'s credentials.

    SQLAlchemy's ``do_connect`` runs inside the engine's greenlet, so the provider's coroutines are awaited
    there (``await_``) on the event loop that opens the connection.
    """

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        login = await_(provider.get())
        try:
            return dialect.connect(*cargs, **_with(cparams, login))
        except Exception as exc:
            if not _is_auth_failure(exc):
                raise
            refused = exc
        for retry in await_(provider.after_auth_failure(login)):
            try:
                connection = dialect.connect(*cargs, **_with(cparams, retry))
            except Exception as exc:
                if not _is_auth_failure(exc):
                    raise
                continue
            logger.info("database login succeeded with refreshed credentials")
            return connection
        raise refused


def _with(cparams: dict[str, Any], login: DatabaseCredentials) -> dict[str, Any]:
    # A copy: ``cparams`` is the engine's, shared by every connection.
    params = {**cparams, "password": login.password}
    if login.user:
        params["user"] = login.user
    return params


def _is_auth_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "sqlstate", None) in _AUTH_FAILURES:
            return True
        seen = seen.__cause__
    return False


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
    engine = create_async_engine(
        target.url,
        # DB_POOL_SIZE + DB_MAX_OVERFLOW connections at most, opened on demand and then kept. SQLAlchemy closes
        # an overflow connection as soon as it is returned while DB_POOL_SIZE sit idle, so under sustained
        # concurrency above DB_POOL_SIZE every request would open and close a connection (measured: 200-450
        # new connections per 5 s at 64 clients, and +55-73% req/s once kept).
        pool_size=settings.db_pool_size + settings.db_max_overflow,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout,
        pool_recycle=settings.db_pool_recycle,
        # Pre-ping, but only of connections that sat idle (see pool.install_idle_pre_ping): under load a
        # checkout costs no extra round trip.
        pool_pre_ping=False,
        pool_use_lifo=True,
        isolation_level=POOL_ISOLATION,
        connect_args=connect_args,
    )
    install_idle_pre_ping(engine, settings.db_pool_pre_ping_idle)
    return engine


def _sqlite_engine(target: DatabaseTarget) -> AsyncEngine:
    database = target.url.database
    in_memory = not database or database == ":memory:"
    engine = create_async_engine(
        target.url,
        # An in-memory database lives as long as its one connection: share that connection.
        **({"poolclass": StaticPool} if in_memory else {"pool_pre_ping": True}),
        connect_args={"timeout": 30, "check_same_thread": False},
        isolation_level=POOL_ISOLATION,
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
