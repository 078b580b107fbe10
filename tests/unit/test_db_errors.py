"""What each driver or pool error means to a request (``domain_error``), and the session limits the settings give.

asyncpg builds its exceptions from the server's SQLSTATE with the lookup used here, so these are the objects a
statement raises; the integration tests (``test_driver``, ``test_database_restart``) provoke the common ones on
a real server.
"""

from __future__ import annotations

import asyncpg
import pytest
from asyncpg.exceptions._base import PostgresMessageMeta
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from productos.domain.errors import ConcurrentUpdateError, ConflictError, DatabaseUnavailableError
from productos.infra.db.engine import SessionLimits
from productos.infra.db.uow import domain_error
from tests.conftest import make_settings

#: The server cannot serve now: 503.
UNAVAILABLE = [
    "08000", "08001", "08003", "08004", "08006", "08P01",  # connection exception
    "28000", "28P01",  # a refused login
    "3D000",  # the login's database does not exist
    "53000", "53100", "53200", "53300", "53400",  # insufficient resources: too many connections, disk full...
    "57000", "57014", "57P01", "57P02", "57P03", "57P04", "57P05",  # operator intervention: shutdown, timeouts
    "58000", "58030",  # system error
    "F0000",  # configuration file error
    "XX000", "XX001", "XX002",  # internal error, data or index corrupted
    "25006",  # a write on a server a failover made a replica
]  # fmt: skip
#: A concurrent change was in the way: 409, retry.
CONCURRENT = ["40001", "40P01", "40003", "55P03"]
#: The change conflicts with stored data: 409.
CONFLICT = ["23505", "23503", "23514", "23502"]
#: A bug (in the SQL, or input the service should have refused): it stays what it is, a 500.
BUGS = ["42601", "42P01", "42703", "42501", "22003", "22P02", "0A000"]


def server_error(sqlstate: str) -> asyncpg.PostgresError:
    error_class = PostgresMessageMeta.get_message_class_for_sqlstate(sqlstate)
    error = error_class("the server's message")
    error.sqlstate = sqlstate  # the classes of unknown codes carry their class's
    return error


def wrapped(error: BaseException) -> Exception:
    """As SQLAlchemy raises it: its DBAPI error, whose ``orig`` chains the driver's."""
    adapted = Exception("adapted")
    adapted.__cause__ = error
    return DBAPIError("SELECT 1", None, adapted)


@pytest.mark.parametrize("sqlstate", UNAVAILABLE)
def test_every_server_failure_is_database_unavailable(sqlstate: str) -> None:
    for error in (server_error(sqlstate), wrapped(server_error(sqlstate))):
        translated = domain_error(error)
        assert isinstance(translated, DatabaseUnavailableError), sqlstate
        assert str(translated) == "database unavailable"
        assert sqlstate in translated.reason


@pytest.mark.parametrize("sqlstate", CONCURRENT)
def test_a_concurrent_change_in_the_way_is_a_retryable_conflict(sqlstate: str) -> None:
    assert isinstance(domain_error(server_error(sqlstate)), ConcurrentUpdateError)


@pytest.mark.parametrize("sqlstate", CONFLICT)
def test_an_integrity_violation_is_a_conflict(sqlstate: str) -> None:
    translated = domain_error(server_error(sqlstate))
    assert isinstance(translated, ConflictError) and not isinstance(translated, ConcurrentUpdateError)


@pytest.mark.parametrize("sqlstate", BUGS)
def test_a_bug_stays_a_bug(sqlstate: str) -> None:
    assert domain_error(server_error(sqlstate)) is None
    assert domain_error(wrapped(server_error(sqlstate))) is None


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InterfaceError("cannot perform operation: connection is closed"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        PoolTimeoutError("QueuePool limit of size 2 overflow 0 reached"),
        OperationalError("SELECT 1", None, Exception("gone")),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_client_side_failure_of_the_connection_is_database_unavailable(error: Exception) -> None:
    assert isinstance(domain_error(error), DatabaseUnavailableError)
    if not isinstance(error, DBAPIError | PoolTimeoutError):
        assert isinstance(domain_error(wrapped(error)), DatabaseUnavailableError)


def test_a_wrong_call_is_not_an_outage() -> None:
    assert domain_error(asyncpg.exceptions.ClientConfigurationError("bad option")) is None
    assert domain_error(ValueError("not a database error")) is None


def test_session_limits_keep_lock_waits_below_the_statement_timeout() -> None:
    defaults = SessionLimits.from_settings(make_settings("postgresql://db/app"))
    assert defaults.command_timeout == 5.0  # DB_STATEMENT_TIMEOUT: the client's bound on each statement
    assert defaults.server_settings() == {
        "statement_timeout": "4500",  # the server cancels a slow statement first, cleanly
        "lock_timeout": "1000",  # DB_LOCK_TIMEOUT
        "idle_in_transaction_session_timeout": "10000",
    }
    short = SessionLimits.from_settings(make_settings("postgresql://db/app", db_statement_timeout=0.5))
    assert (short.statement_timeout_ms, short.lock_timeout_ms) == (450, 250)  # lock waits: at most half
    tiny = SessionLimits.from_settings(
        make_settings("postgresql://db/app", db_statement_timeout=0.001, db_lock_timeout=0.0001)
    )
    assert min(tiny.statement_timeout_ms, tiny.lock_timeout_ms) >= 1  # 0 would mean "no limit" to PostgreSQL
