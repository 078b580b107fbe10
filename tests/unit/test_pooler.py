"""``DB_POOLER`` and ``DATABASE_MIGRATE_URL``: the settings, what an engine behind a transaction-mode pooler sends
at login, how a pooler's refusals are recognised. No I/O: the real PgBouncer is in tests/integration."""

from __future__ import annotations

import asyncpg
import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from productos.domain.errors import DatabaseUnavailableError
from productos.entrypoints.check import pooler_hint
from productos.infra.db.driver import supports_driver_statements
from productos.infra.db.engine import (
    POOLER_OPTION,
    PooledTransactionsConnection,
    SessionLimits,
    _begins_transaction,
    _is_auth_failure,
    behind_pooler,
    create_engine,
    engine_traits,
)
from productos.infra.db.statements import SqlUnitOfWork, statement_cache
from productos.infra.db.uow import SqlAlchemyUnitOfWorkBase
from productos.settings import Settings, settings_from_values
from tests.conftest import make_settings


def test_db_pooler_is_none_by_default_and_takes_transaction_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from_values({}).db_pooler == "none"
    monkeypatch.setenv("DB_POOLER", " Transaction ")
    assert Settings().db_pooler == "transaction"
    with pytest.raises(ValidationError, match=r"db_pooler|DB_POOLER"):
        settings_from_values({"db_pooler": "session"})


def test_database_migrate_url_is_a_secret_and_blank_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from_values({}).database_migrate_url is None
    assert settings_from_values({"database_migrate_url": "  "}).database_migrate_url is None
    monkeypatch.setenv("DATABASE_MIGRATE_URL", "postgresql://owner:s3cret@db:5432/app")
    settings = Settings()
    assert isinstance(settings.database_migrate_url, SecretStr)
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.database_migrate_url)


def test_the_limits_as_set_local_statements() -> None:
    limits = SessionLimits.from_settings(make_settings("postgresql://db/app", db_lock_timeout=0.3))
    assert limits.set_local() == (
        "SET LOCAL statement_timeout = 4500; SET LOCAL lock_timeout = 300; "
        "SET LOCAL idle_in_transaction_session_timeout = 10000"
    )


@pytest.mark.parametrize(
    ("query", "begins"),
    [
        ("BEGIN ISOLATION LEVEL READ COMMITTED", True),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY;", True),  # asyncpg's transaction()
        ("  begin", True),
        ("START TRANSACTION", True),
        ("SAVEPOINT sp_1", False),
        ("COMMIT", False),
        ("SELECT 'BEGIN'", False),
    ],
)
def test_what_counts_as_beginning_a_transaction(query: str, begins: bool) -> None:
    assert _begins_transaction(query) is begins


async def test_behind_a_pooler_nothing_outlives_a_transaction_on_the_server() -> None:
    direct = create_engine(make_settings("postgresql://db/app"))
    pooled = create_engine(make_settings("postgresql://pgbouncer:6432/app", db_pooler="transaction"))
    try:
        assert not behind_pooler(direct) and behind_pooler(pooled)
        # Through the same pool, in the transactional mode units of work switch to: still behind the pooler.
        assert behind_pooler(pooled.execution_options(isolation_level="READ COMMITTED"))
        login = await _login_arguments(pooled)
        assert login["statement_cache_size"] == 0 and login["prepared_statement_cache_size"] == 0
        assert login["server_settings"] == {"application_name": "productos-api"}  # no session limits at login
        connection_class = login["connection_class"]
        assert isinstance(connection_class, type) and issubclass(connection_class, PooledTransactionsConnection)
        limits = SessionLimits.from_settings(make_settings("postgresql://db/app")).set_local()
        assert limits == connection_class.SET_LOCAL
        assert login["command_timeout"] == 5.0  # asyncpg's own bound stays
        straight = await _login_arguments(direct)
        assert straight["statement_cache_size"] == 512 and "connection_class" not in straight
        assert straight["server_settings"]["statement_timeout"] == "4500"  # type: ignore[index]
    finally:
        await pooled.dispose()
        await direct.dispose()


class _Captured(Exception):
    pass


async def _login_arguments(engine: AsyncEngine) -> dict[str, object]:
    """What the engine would hand asyncpg.connect for a new connection (captured, nothing connects)."""
    captured: dict[str, object] = {}

    def capture(_dialect: object, _record: object, _cargs: object, cparams: dict[str, object]) -> None:
        captured.update(cparams)
        raise _Captured

    event.listen(engine.sync_engine, "do_connect", capture)
    with pytest.raises(_Captured):
        await engine.connect()
    return captured


def test_pgbouncers_refusals_are_recognised() -> None:
    startup = asyncpg.ProtocolViolationError("unsupported startup parameter: idle_in_transaction_session_timeout")
    assert pooler_hint(DatabaseUnavailableError("database unavailable")) is None
    chained = DatabaseUnavailableError("database unavailable")
    chained.__cause__ = startup
    hint = pooler_hint(chained)
    assert hint is not None and "DB_POOLER=transaction" in hint
    statement_mode = asyncpg.ProtocolViolationError("transaction blocks not allowed in statement pooling mode")
    assert "pool_mode=transaction" in (pooler_hint(statement_mode) or "")
    collision = asyncpg.DuplicatePreparedStatementError('prepared statement "__asyncpg_stmt_1__" already exists')
    assert "DB_POOLER=transaction" in (pooler_hint(collision) or "")


def test_pgbouncers_refused_password_is_an_authentication_failure() -> None:
    # PgBouncer 1.18 answers a wrong password with protocol_violation, not invalid_password.
    refused = asyncpg.ProtocolViolationError("SASL authentication failed")
    assert refused.sqlstate == "08P01"
    assert _is_auth_failure(refused)
    assert _is_auth_failure(asyncpg.InvalidPasswordError("password authentication failed for user"))
    assert not _is_auth_failure(asyncpg.ProtocolViolationError("unsupported startup parameter: statement_timeout"))


async def test_an_engines_traits_are_worked_out_once_and_again_when_its_options_change() -> None:
    engine = create_engine(make_settings("postgresql://db/app"))
    sqlite = create_engine(make_settings("sqlite:///:memory:"))
    try:
        traits = engine_traits(engine)
        assert engine_traits(engine) is traits  # cached
        assert traits.asyncpg and not traits.behind_pooler and not traits.schema_translate
        assert supports_driver_statements(engine) and not supports_driver_statements(sqlite)
        assert statement_cache(engine) is statement_cache(engine) is traits.statement_cache
        engine.sync_engine.update_execution_options(**{POOLER_OPTION: "transaction"})
        assert behind_pooler(engine) and engine_traits(engine) is not traits
        assert statement_cache(engine) is traits.statement_cache  # one cache per dialect, found again
        engine.sync_engine.update_execution_options(schema_translate_map={None: "tenant"})
        assert engine_traits(engine).schema_translate
        # A unit of work then takes SQLAlchemy's path, which renders the map at execution.
        unit = SqlUnitOfWork(engine, read_only=True)
        assert isinstance(unit._inner(engine), SqlAlchemyUnitOfWorkBase)
        # An engine made with other options has traits of its own.
        assert not engine_traits(engine.execution_options(schema_translate_map=None)).schema_translate
    finally:
        await engine.dispose()
        await sqlite.dispose()
