"""One async engine per process, configured from ``Settings``: pool, timeouts and SQLite pragmas.

With a ``DatabaseCredentialsProvider`` (a rotating Secrets Manager secret, RDS IAM tokens), every new
connection asks it for its login; pooled connections stay logged in.

``DB_POOLER=transaction`` (PgBouncer in transaction mode, RDS Proxy), for every URL an engine is made for: the
pooler hands each transaction to whichever server connection is free, so nothing may outlive a transaction on
the server. No session settings at login (the session limits are set per transaction, ``SessionLimits``), no
named prepared statements (asyncpg's and SQLAlchemy's statement caches are off: asyncpg then sends each statement
unnamed, parsed again with each execution), and units of work run every statement inside BEGIN...COMMIT
(``behind_pooler``).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import asyncpg
from pydantic import SecretStr
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from productos.domain.errors import ConfigurationError
from productos.domain.settings_ports import DatabaseCredentials, DatabaseCredentialsProvider
from productos.infra.db.pool import FairAsyncQueuePool, close_without_waiting, install_idle_pre_ping
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

#: The execution option that marks an engine whose connections go through a transaction-mode pooler.
POOLER_OPTION = "productos_pooler"


def create_engine(
    settings: Settings,
    *,
    credentials: DatabaseCredentialsProvider | None = None,
    url: SecretStr | str | None = None,
) -> AsyncEngine:
    """Create the engine. Connects lazily: nothing here needs the database to be up.

    Args:
        settings: the service's settings.
        credentials: when given (PostgreSQL only), each new connection logs in with what it returns, and a
            refused login is retried once with ``after_auth_failure``'s credentials.
        url: the database to connect to, when not ``DATABASE_URL``; the other settings apply to it all the same
            (``open_migration_engine`` turns ``DB_POOLER`` off for ``DATABASE_MIGRATE_URL``, a direct login).
    """
    raw = settings.database_url if url is None else url
    target = parse_database_url(raw.get_secret_value() if isinstance(raw, SecretStr) else raw)
    if target.dialect == "sqlite":
        if credentials is not None:
            raise ConfigurationError("DB_IAM_AUTH and rotating secrets need a PostgreSQL DATABASE_URL")
        return _sqlite_engine(target)
    engine = _postgres_engine(target, settings)
    if credentials is not None:
        use_credentials(engine, credentials)
    return engine


def behind_pooler(engine: AsyncEngine) -> bool:
    """Whether ``engine``'s connections go through a transaction-mode pooler (``DB_POOLER=transaction``): its
    units of work then run every statement inside a transaction, read-only and autocommit ones included."""
    return engine_traits(engine).behind_pooler


class EngineTraits:
    """What every unit of work asks of its engine, worked out once per engine (``engine_traits``) instead of
    through ``AsyncEngine``'s proxies on each unit: a dozen Python calls per request."""

    __slots__ = ("asyncpg", "behind_pooler", "options", "schema_translate", "statement_cache")

    def __init__(self, engine: AsyncEngine) -> None:
        sync = engine.sync_engine
        options = sync.get_execution_options()
        #: The execution options these traits were read from: ``update_execution_options`` replaces them.
        self.options = options
        #: ``DB_POOLER=transaction``: see ``behind_pooler``.
        self.behind_pooler: bool = options.get(POOLER_OPTION) == "transaction"
        dialect = sync.dialect
        #: PostgreSQL through asyncpg: see ``productos.infra.db.driver.supports_driver_statements``.
        self.asyncpg: bool = dialect.name == "postgresql" and dialect.driver == "asyncpg"
        #: A ``schema_translate_map``, which SQLAlchemy renders at execution (statements compiled once would not).
        self.schema_translate: bool = bool(options.get("schema_translate_map"))
        #: The statement cache of the engine's dialect, once ``productos.infra.db.statements`` has looked it up.
        self.statement_cache: Any = None


_TRAITS = "_productos_traits"


def engine_traits(engine: AsyncEngine) -> EngineTraits:
    """``engine``'s ``EngineTraits``, computed on first use and again whenever its execution options change."""
    sync = engine.sync_engine
    traits: EngineTraits | None = sync.__dict__.get(_TRAITS)
    # Attribute reads only on a hit: SQLAlchemy replaces the options' mapping on every change, never mutates it.
    if traits is None or traits.options is not sync._execution_options:
        traits = EngineTraits(engine)
        sync.__dict__[_TRAITS] = traits
    return traits


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
        sqlstate = getattr(seen, "sqlstate", None)
        if sqlstate in _AUTH_FAILURES:
            return True
        # PgBouncer (1.18) refuses a password with protocol_violation: "SASL authentication failed",
        # "password authentication failed".
        if sqlstate == "08P01" and "authentication failed" in str(seen):
            return True
        seen = seen.__cause__
    return False


@dataclass(frozen=True)
class SessionLimits:
    """The bounds every database session runs under: the one place that derives them from the settings.

    - ``command_timeout`` (s): asyncpg's client-side bound on each statement, ``DB_STATEMENT_TIMEOUT``: what a
      request may wait for one statement, even on a server or a network that no longer answers.
    - ``statement_timeout`` (ms): the server's own, 90 % of that, so that a statement that is merely slow is
      cancelled by the server (SQLSTATE 57014, a clean reply) and its connection kept; only a server that has
      stopped answering reaches the client's bound, and that connection is terminated.
    - ``lock_timeout`` (ms): ``DB_LOCK_TIMEOUT``, at most half the statement timeout (PostgreSQL bounds each
      lock wait, and one row can make a statement wait twice: for the row's tuple lock behind other waiters,
      then for the holder's transaction). A statement that waits for a row another transaction holds gives up
      early (SQLSTATE 55P03, a 409), so a long-held row lock costs its waiters that long, not a pooled
      connection each for the whole statement timeout.
    - ``idle_in_transaction_session_timeout`` (ms): the server ends a session left idle inside a transaction.

    Straight to PostgreSQL they are applied at login, as ``server_settings`` (the startup packet: no round trip).
    Behind a transaction-mode pooler (``DB_POOLER=transaction``) a login's settings would stay on whichever
    server connection the pooler opened for it (and PgBouncer refuses them: "unsupported startup parameter"),
    so each transaction sets them itself: ``SET LOCAL`` for all three, sent with its BEGIN in one message (one
    round trip, as before). They hold for that transaction only, which is all a unit of work is there, and
    ``idle_in_transaction_session_timeout`` still ends a server session left idle inside one (the pooler then
    closes the client's connection). Statements outside any transaction (the health probe's ``SELECT 1``, the
    pool's pre-ping, the driver's set-up queries at login) run under the server's defaults behind a pooler;
    asyncpg's own ``command_timeout`` bounds them as it bounds every statement.
    """

    command_timeout: float
    statement_timeout_ms: int
    lock_timeout_ms: int
    idle_in_transaction_timeout_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionLimits:
        statement_ms = max(int(settings.db_statement_timeout * 900), 1)
        # 0 would mean "no limit" to PostgreSQL: every limit is at least 1 ms.
        lock_ms = max(int(min(settings.db_lock_timeout, settings.db_statement_timeout / 2) * 1000), 1)
        return cls(
            command_timeout=settings.db_statement_timeout,
            statement_timeout_ms=statement_ms,
            lock_timeout_ms=lock_ms,
            idle_in_transaction_timeout_ms=max(int(settings.db_statement_timeout * 2000), 10_000),
        )

    def server_settings(self) -> dict[str, str]:
        """The limits as PostgreSQL settings (milliseconds), for the login's ``server_settings``."""
        return {
            "statement_timeout": str(self.statement_timeout_ms),
            "lock_timeout": str(self.lock_timeout_ms),
            "idle_in_transaction_session_timeout": str(self.idle_in_transaction_timeout_ms),
        }

    def set_local(self) -> str:
        """The limits as ``SET LOCAL`` statements in one string, for the start of each transaction."""
        return "; ".join(f"SET LOCAL {name} = {value}" for name, value in self.server_settings().items())


class PooledTransactionsConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg has no type hints
    """An asyncpg connection through a transaction-mode pooler: every transaction it begins sets the session
    limits first. Whoever begins it (a unit of work of the statement toolkit, SQLAlchemy's asyncpg adapter,
    asyncpg's ``transaction()``), the BEGIN goes out as a simple-protocol ``execute`` without arguments: the
    ``SET LOCAL`` statements are appended to that same message, so they cost no round trip.

    ``create_engine`` makes one subclass per set of limits (``SET_LOCAL`` is a class attribute: asyncpg creates
    the connection itself).
    """

    SET_LOCAL: ClassVar[str] = ""

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        if not args and self.SET_LOCAL and _begins_transaction(query):
            query = f"{query.rstrip().rstrip(';')}; {self.SET_LOCAL}"
        result: str = await super().execute(query, *args, timeout=timeout)
        return result


def _begins_transaction(query: str) -> bool:
    head = query.lstrip()[:17].upper()
    return head.startswith("BEGIN") or head == "START TRANSACTION"


@functools.cache
def _pooled_connection_class(set_local: str) -> type[PooledTransactionsConnection]:
    return type("PooledTransactionsConnection", (PooledTransactionsConnection,), {"SET_LOCAL": set_local})


def _postgres_engine(target: DatabaseTarget, settings: Settings) -> AsyncEngine:
    limits = SessionLimits.from_settings(settings)
    pooled = settings.db_pooler == "transaction"
    connect_args: dict[str, Any] = {
        **target.connect_args,
        "timeout": settings.db_connect_timeout,
        "command_timeout": limits.command_timeout,
        "statement_cache_size": _ASYNCPG_STATEMENT_CACHE,
    }
    server_settings = dict(connect_args.get("server_settings", {}))
    # PgBouncer and RDS Proxy keep application_name for each client themselves.
    server_settings.setdefault("application_name", settings.service_name)
    if pooled:
        # No named statement may outlive its transaction: asyncpg's cache off (its statements then go unnamed,
        # and each execution sends its Parse again with the Bind and Execute, so that it depends on nothing an
        # earlier message left on a server connection: the cache on, `productos migrate` met "prepared statement
        # "__asyncpg_stmt_1__" already exists"). SQLAlchemy's own cache off too: it would keep each statement's
        # result types from its first Parse while every execution is parsed anew, so a column whose type a
        # migration changed would be decoded with the old type, where the server refuses a named statement.
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_cache_size"] = 0
        connect_args["connection_class"] = _pooled_connection_class(limits.set_local())
    else:
        server_settings.update(limits.server_settings())
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
        # Waiters for a connection are served first come first served (SQLAlchemy's queue lets newcomers take
        # returned connections from them: see pool.FairAsyncQueue).
        poolclass=FairAsyncQueuePool,
        isolation_level=POOL_ISOLATION,
        connect_args=connect_args,
        execution_options={POOLER_OPTION: settings.db_pooler},
    )
    install_idle_pre_ping(engine, settings.db_pool_pre_ping_idle)
    close_without_waiting(engine)
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
