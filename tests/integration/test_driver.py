"""Statements on the pooled asyncpg connection (``productos.infra.db.driver``) on a real PostgreSQL: errors,
transactions, and what happens to a connection after each kind of failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from productos.domain.errors import ConcurrentUpdateError, ConflictError, DatabaseUnavailableError
from productos.infra.db.driver import DriverConnection, DriverUnitOfWorkBase, add_statement_listener
from productos.infra.db.engine import create_engine
from tests.conftest import make_settings
from tests.integration.tcp_proxy import ControllableProxy

pytestmark = pytest.mark.postgres

_INSERT = (
    "INSERT INTO productos (nombre, precio, stock, version, created_at, updated_at) "
    "VALUES ($1, $2, 0, 1, now(), now()) RETURNING id"
)


class Unit(DriverUnitOfWorkBase):
    connection: DriverConnection

    def _bind(self, connection: DriverConnection) -> None:
        self.connection = connection


@pytest.fixture
async def engine(clean_postgres: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(make_settings(clean_postgres, db_statement_timeout=0.5))
    yield engine
    await engine.dispose()


async def _backend_pid(engine: AsyncEngine) -> int:
    async with Unit(engine, read_only=True) as unit:
        pid: int = await unit.connection.fetchval("SELECT pg_backend_pid()")
    return pid


async def _count(engine: AsyncEngine) -> int:
    async with Unit(engine, read_only=True) as unit:
        count: int = await unit.connection.fetchval("SELECT count(*) FROM productos")
    return count


async def test_a_transactional_unit_commits_once_and_rolls_back_without_commit(engine: AsyncEngine) -> None:
    async with Unit(engine) as unit:
        assert unit.connection.in_transaction()
        await unit.connection.fetchval(_INSERT, "a", 1)
    assert await _count(engine) == 0
    async with Unit(engine) as unit:
        await unit.connection.fetchval(_INSERT, "a", 1)
        await unit.connection.fetchval(_INSERT, "b", 1)
        await unit.commit()
        assert not unit.connection.in_transaction()
    assert await _count(engine) == 2


async def test_an_autocommit_unit_commits_each_statement_as_it_runs(engine: AsyncEngine) -> None:
    async with Unit(engine, autocommit=True) as unit:
        assert not unit.connection.in_transaction()
        await unit.connection.fetchval(_INSERT, "a", 1)
        assert await _count(engine) == 1  # seen by another connection before this unit ends
    assert await _count(engine) == 1


async def test_commit_after_a_failed_statement_refuses_to_pretend(engine: AsyncEngine) -> None:
    async with Unit(engine) as unit:
        await unit.connection.fetchval(_INSERT, "a", 1)
        with pytest.raises(ConflictError):  # CHECK (precio > 0)
            await unit.connection.fetchval(_INSERT, "b", 0)
        # PostgreSQL would answer this COMMIT with ROLLBACK: the unit must not report success.
        with pytest.raises(RuntimeError, match="nothing was committed"):
            await unit.commit()
    assert await _count(engine) == 0
    async with Unit(engine, read_only=True) as unit:  # and the connection went back to the pool clean
        assert not unit.connection.in_transaction()


async def test_errors_become_domain_errors_and_keep_the_connection_when_it_is_sound(engine: AsyncEngine) -> None:
    pid = await _backend_pid(engine)
    async with Unit(engine, read_only=True) as unit:
        # The server's statement_timeout, well before asyncpg's own command timeout (0.5 s) would cancel it.
        await unit.connection.execute("SET statement_timeout = 100")
        with pytest.raises(DatabaseUnavailableError) as raised:  # SQLSTATE 57014
            await unit.connection.fetchval("SELECT pg_sleep(2)")
        assert isinstance(raised.value.__cause__, asyncpg.QueryCanceledError)
        with pytest.raises(asyncpg.PostgresSyntaxError):  # a bug in the SQL stays what it is
            await unit.connection.fetchval("SELEC 1")
        assert not unit.connection.failed
    assert await _backend_pid(engine) == pid  # the same pooled connection, reused


async def test_a_statement_cancelled_midway_invalidates_its_connection(engine: AsyncEngine) -> None:
    pid = await _backend_pid(engine)
    async with Unit(engine, read_only=True) as unit:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await unit.connection.fetchval("SELECT pg_sleep(0.3)")
        assert unit.connection.failed
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    new_pid = await _backend_pid(engine)
    assert new_pid != pid  # its reply might still have been on the way: not reused
    admin = await asyncpg.connect(engine.url.render_as_string(hide_password=False).replace("+asyncpg", ""))
    try:
        for _ in range(50):
            if not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the invalidated connection was left open")
    finally:
        await admin.close()


async def test_every_statement_reaches_the_listeners_with_its_outcome(engine: AsyncEngine) -> None:
    heard: list[tuple[str, bool]] = []
    add_statement_listener(engine, lambda statement, elapsed, error: heard.append((statement, error is None)))
    async with Unit(engine) as unit:
        await unit.connection.fetchval(_INSERT, "a", 1)
        await unit.commit()
    async with Unit(engine, read_only=True) as unit:
        with pytest.raises(asyncpg.PostgresSyntaxError):
            await unit.connection.fetchval("SELEC 1")
    assert heard == [
        ("BEGIN ISOLATION LEVEL READ COMMITTED", True),
        (_INSERT, True),
        ("COMMIT", True),
        ("SELEC 1", False),
    ]


async def test_a_refused_connection_is_database_unavailable() -> None:
    engine = create_engine(make_settings("postgresql://postgres@127.0.0.1:1/test"))
    try:
        with pytest.raises(DatabaseUnavailableError) as raised:
            async with Unit(engine, read_only=True):
                pass
        assert "127.0.0.1" not in str(raised.value)
    finally:
        await engine.dispose()


# --- failures of the connection and of the server ---------------------------------------------------------------


async def _admin(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url.replace("+asyncpg", ""), timeout=5)


async def _terminate(url: str, pid: int) -> None:
    """pg_terminate_backend, then wait until the backend has gone (its FATAL 57P01 sent)."""
    admin = await _admin(url)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        for _ in range(100):
            if not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                return
            await asyncio.sleep(0.02)
        pytest.fail(f"backend {pid} was not terminated")
    finally:
        await admin.close()


async def test_a_terminated_backend_is_unavailable_and_every_older_connection_is_replaced(
    engine: AsyncEngine, clean_postgres: str
) -> None:
    async with Unit(engine, read_only=True) as first, Unit(engine, read_only=True) as second:
        pid = await first.connection.fetchval("SELECT pg_backend_pid()")
        other = await second.connection.fetchval("SELECT pg_backend_pid()")
        await _terminate(clean_postgres, pid)
        with pytest.raises(DatabaseUnavailableError):
            await first.connection.fetchval("SELECT 1")
        assert first.connection.failed
    assert first.connection.driver.is_closed()
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    # The other connection was opened before the server was lost: replaced on checkout, not failing once.
    assert {await _backend_pid(engine) for _ in range(3)}.isdisjoint({pid, other})


async def test_a_connection_the_server_closed_in_the_pool_is_replaced_on_checkout(
    engine: AsyncEngine, clean_postgres: str
) -> None:
    pid = await _backend_pid(engine)
    await _terminate(clean_postgres, pid)
    await asyncio.sleep(0.05)  # the goodbye and the end of the connection reach asyncpg
    # Idle for less than DB_POOL_PRE_PING_IDLE, so not pinged: asyncpg already knows it is closed.
    assert await _count(engine) == 0
    assert await _backend_pid(engine) != pid


async def test_a_goodbye_seen_before_the_connection_closes_is_unavailable_not_a_500(clean_postgres: str) -> None:
    """The issue's ``InternalClientError: cannot switch to state 12``: the server's FATAL 57P01 arrives while the
    connection is idle, and the next statement starts before the socket's end is seen (a proxy holds it open)."""
    parts = urlsplit(clean_postgres)
    with ControllableProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        proxy.hold_client_open = True
        proxy.set_mode("forward")
        url = clean_postgres.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
        engine = create_engine(make_settings(url, db_statement_timeout=2))
        try:
            async with Unit(engine, read_only=True) as unit:
                pid = await unit.connection.fetchval("SELECT pg_backend_pid()")
                await _terminate(clean_postgres, pid)
                await asyncio.sleep(0.05)
                assert not unit.connection.driver.is_closed()
                with pytest.raises(DatabaseUnavailableError) as raised:
                    await unit.connection.fetchval("SELECT 1")
                assert isinstance(raised.value.__cause__, asyncpg.InternalClientError)
                assert "cannot switch to state" in str(raised.value.__cause__)
                assert unit.connection.failed
            assert unit.connection.driver.is_closed()
            assert await _backend_pid(engine) != pid
        finally:
            await engine.dispose()


async def test_a_write_refused_as_read_only_is_unavailable_and_its_connection_replaced(
    engine: AsyncEngine,
) -> None:
    """SQLSTATE 25006: what a write meets on a server a failover has demoted (Aurora's old writer)."""
    pid = await _backend_pid(engine)
    async with Unit(engine, autocommit=True) as unit:
        await unit.connection.execute("SET default_transaction_read_only = on")
        with pytest.raises(DatabaseUnavailableError) as raised:
            await unit.connection.fetchval(_INSERT, "a", 1)
        assert isinstance(raised.value.__cause__, asyncpg.ReadOnlySQLTransactionError)
        assert unit.connection.failed
    assert await _backend_pid(engine) != pid
    assert await _count(engine) == 0


async def test_sessions_carry_the_limits_and_a_lock_wait_ends_with_a_retryable_conflict(
    engine: AsyncEngine, clean_postgres: str
) -> None:
    # DB_STATEMENT_TIMEOUT 0.5 s: the server's statement_timeout is 90 % of it, lock_timeout at most half of it.
    async with Unit(engine, read_only=True) as unit:
        assert await unit.connection.fetchval("SHOW statement_timeout") == "450ms"
        assert await unit.connection.fetchval("SHOW lock_timeout") == "250ms"
        pid = await unit.connection.fetchval("SELECT pg_backend_pid()")
    async with Unit(engine, autocommit=True) as unit:
        producto_id = await unit.connection.fetchval(_INSERT, "a", 1)
    holder = await _admin(clean_postgres)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM productos WHERE id = $1 FOR UPDATE", producto_id)
            async with Unit(engine, autocommit=True) as unit:
                with pytest.raises(ConcurrentUpdateError) as raised:
                    await unit.connection.execute("UPDATE productos SET stock = 1 WHERE id = $1", producto_id)
                assert raised.value.__cause__.sqlstate == "55P03"  # type: ignore[union-attr]
                assert not unit.connection.failed
    finally:
        await holder.close()
    assert await _backend_pid(engine) == pid  # a refused lock leaves the connection sound: kept


# --- the connection a unit gives back ---------------------------------------------------------------------------


async def _server_state(engine: AsyncEngine, pid: int) -> str:
    admin = await asyncpg.connect(engine.url.render_as_string(hide_password=False).replace("+asyncpg", ""))
    try:
        state: str = await admin.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await admin.close()
    return state


async def _leave_failed_transaction(engine: AsyncEngine) -> None:
    async with Unit(engine) as unit:
        with pytest.raises(ConflictError):  # CHECK (precio > 0): the transaction is aborted, the connection sound
            await unit.connection.fetchval(_INSERT, "b", 0)


async def _commit(engine: AsyncEngine) -> None:
    async with Unit(engine) as unit:
        await unit.connection.fetchval(_INSERT, "a", 1)
        await unit.commit()


async def _leave_without_commit(engine: AsyncEngine) -> None:
    async with Unit(engine) as unit:
        await unit.connection.fetchval(_INSERT, "a", 1)


async def _roll_back(engine: AsyncEngine) -> None:
    async with Unit(engine) as unit:
        await unit.connection.fetchval(_INSERT, "a", 1)
        await unit.rollback()


async def _autocommit(engine: AsyncEngine) -> None:
    async with Unit(engine, autocommit=True) as unit:
        await unit.connection.fetchval(_INSERT, "a", 1)


async def _read(engine: AsyncEngine) -> None:
    async with Unit(engine, read_only=True) as unit:
        await unit.connection.fetchval("SELECT 1")


@pytest.mark.parametrize(
    "use", [_read, _autocommit, _commit, _roll_back, _leave_without_commit, _leave_failed_transaction]
)
async def test_a_connection_goes_back_to_the_pool_outside_any_transaction(
    clean_postgres: str, use: Callable[[AsyncEngine], Awaitable[None]]
) -> None:
    """A driver unit's connection skips SQLAlchemy's reset-on-return rollback (DriverConnection.release): it goes
    back only when neither the server nor SQLAlchemy's adapter has a transaction open on it, whatever the unit did;
    a connection still in a transaction is invalidated instead (next test)."""
    engine = create_engine(make_settings(clean_postgres, db_pool_size=1, db_max_overflow=0))
    resets: list[bool] = []
    event.listen(
        engine.sync_engine.pool, "reset", lambda _dbapi, _record, state: resets.append(state.transaction_was_reset)
    )
    try:
        pid = await _backend_pid(engine)
        await use(engine)
        assert resets and all(resets)  # no rollback on return was asked of SQLAlchemy
        assert await _server_state(engine, pid) == "idle"  # not "idle in transaction"
        pooled = await engine.raw_connection()
        try:
            assert pooled.dbapi_connection is not None
            assert pooled.dbapi_connection.driver_connection.get_server_pid() == pid  # the same connection, kept
            assert not pooled.dbapi_connection.driver_connection.is_in_transaction()
            assert pooled.dbapi_connection._transaction is None  # SQLAlchemy's adapter began nothing either
        finally:
            pooled.close()
    finally:
        await engine.dispose()


async def test_a_connection_left_inside_a_transaction_is_invalidated_not_reset(engine: AsyncEngine) -> None:
    pid = await _backend_pid(engine)
    async with Unit(engine, read_only=True) as unit:
        await unit.connection.driver.execute("BEGIN")  # behind the unit's back, on asyncpg itself
        await unit.connection.release()
        unit._conn = None  # released already
    assert await _backend_pid(engine) != pid


# --- the checkout's deadline ------------------------------------------------------------------------------------


@pytest.fixture
async def one_connection(clean_postgres: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(make_settings(clean_postgres, db_pool_size=1, db_max_overflow=0, db_pool_timeout=30))
    yield engine
    await engine.dispose()


async def test_a_checkout_past_its_deadline_is_unavailable_and_leaves_the_task_uncancelled(
    one_connection: AsyncEngine,
) -> None:
    holder = await DriverConnection.checkout(one_connection)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(DatabaseUnavailableError) as raised:
            await DriverConnection.checkout(one_connection, timeout=0.2)
        assert 0.2 <= asyncio.get_running_loop().time() - started < 2
        assert raised.value.reason == "TimeoutError"
        assert isinstance(raised.value.__cause__, TimeoutError)
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        await asyncio.sleep(0)  # and no cancellation is left pending for the task's next await
    finally:
        await holder.release()
    conn = await DriverConnection.checkout(one_connection, timeout=0.2)  # the waiter left the line
    await conn.release()
    assert one_connection.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_checkout_cancelled_from_outside_stays_cancelled(one_connection: AsyncEngine) -> None:
    holder = await DriverConnection.checkout(one_connection)
    try:
        waiter = asyncio.ensure_future(DriverConnection.checkout(one_connection, timeout=5))
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        # Cancelled from outside just as the deadline passes: the caller's cancellation wins, as with
        # asyncio.timeout().
        waiter = asyncio.ensure_future(DriverConnection.checkout(one_connection, timeout=0.1))
        await asyncio.sleep(0.1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    finally:
        await holder.release()
    assert one_connection.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_checkout_within_its_deadline_is_not_cancelled_later(one_connection: AsyncEngine) -> None:
    conn = await DriverConnection.checkout(one_connection, timeout=0.05)
    try:
        await asyncio.sleep(0.15)  # the deadline's timer is gone with the checkout
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.release()
