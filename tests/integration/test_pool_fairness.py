"""The engine's pool on PostgreSQL (``FairAsyncQueuePool``): callers waiting for a connection are served in the
order they came, give up at ``DB_POOL_TIMEOUT`` with SQLAlchemy's ``TimeoutError`` (503 to clients), lose no
connection when cancelled, and SQLAlchemy's invalidation and recycling work as before."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from productos.domain.errors import DatabaseUnavailableError
from productos.infra.db.driver import DriverConnection
from productos.infra.db.engine import create_engine
from productos.infra.db.pool import FairAsyncQueue, FairAsyncQueuePool
from productos.observability.db import instrument_engine
from productos.observability.metrics import Metrics
from productos.settings import Settings
from tests.conftest import make_settings
from tests.e2e.conftest import serve

pytestmark = pytest.mark.postgres

#: Scheduling slack over a promised bound (a 2-core machine running PostgreSQL and the test).
SLACK = 0.5


@pytest.fixture
async def engine_of(postgres_url: str) -> AsyncIterator[Callable[..., AsyncEngine]]:
    """Engines on the session's database (no overflow unless asked), disposed after the test."""
    engines: list[AsyncEngine] = []

    def make(**overrides: Any) -> AsyncEngine:
        engine = create_engine(make_settings(postgres_url, **{"db_max_overflow": 0, **overrides}))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.dispose()


def queue_of(engine: AsyncEngine) -> FairAsyncQueue:
    pool = engine.sync_engine.pool
    assert isinstance(pool, FairAsyncQueuePool)
    queue = pool._pool
    assert isinstance(queue, FairAsyncQueue)
    return queue


async def until_waiting(engine: AsyncEngine, count: int) -> None:
    queue = queue_of(engine)
    deadline = time.monotonic() + 5
    while queue.waiting != count:
        assert time.monotonic() < deadline, f"{queue.waiting} waiting, not {count}"
        await asyncio.sleep(0.005)


async def backend_pid(connection: PoolProxiedConnection) -> int:
    pid: int = connection.driver_connection.get_server_pid()  # type: ignore[union-attr]
    return pid


async def test_postgresql_engines_use_the_fair_pool_and_sqlite_keeps_its_own(
    engine_of: Callable[..., AsyncEngine], tmp_path: Any
) -> None:
    engine = engine_of(db_pool_size=2, db_max_overflow=1, db_pool_timeout=1.5)
    pool = engine.sync_engine.pool
    assert isinstance(pool, FairAsyncQueuePool)
    assert (pool.size(), pool.timeout(), pool.checkedout()) == (3, 1.5, 0)  # pool + overflow, kept
    sqlite = create_engine(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"))
    try:
        assert not isinstance(sqlite.sync_engine.pool, FairAsyncQueuePool)
    finally:
        await sqlite.dispose()


async def test_waiters_are_served_in_the_order_they_came_and_newcomers_wait_behind_them(
    engine_of: Callable[..., AsyncEngine],
) -> None:
    engine = engine_of(db_pool_size=1, db_pool_timeout=10)
    served: list[str] = []

    async def client(name: str) -> None:
        connection = await engine.raw_connection()
        served.append(name)
        await asyncio.sleep(0)  # hold it across a turn of the loop, as a request does
        connection.close()

    holder = await engine.raw_connection()  # the pool's only connection
    waiters = []
    for n in range(5):
        waiters.append(asyncio.create_task(client(f"waiter {n}")))
        await until_waiting(engine, n + 1)
    # Requests that arrive just as the connection comes back: their tasks run before the first waiter's. With
    # SQLAlchemy's queue the first of them takes it, and that waiter goes to the back of the line.
    newcomers = [asyncio.create_task(client(f"newcomer {n}")) for n in range(3)]
    holder.close()
    await asyncio.gather(*waiters, *newcomers)
    assert served == [f"waiter {n}" for n in range(5)] + [f"newcomer {n}" for n in range(3)]
    pool = engine.sync_engine.pool
    assert (pool.checkedout(), pool.checkedin(), queue_of(engine).waiting) == (0, 1, 0)


async def test_many_clients_on_a_small_pool_all_get_served_and_nothing_leaks(
    engine_of: Callable[..., AsyncEngine],
) -> None:
    engine = engine_of(db_pool_size=2, db_pool_timeout=10)
    metrics = Metrics()
    instrument_engine(engine, metrics=metrics, tracing=None, pool_name="fairness")

    async def client(n: int) -> int:
        total = 0
        for i in range(5):
            async with engine.connect() as connection:
                total += (await connection.execute(text("SELECT CAST(:n AS integer)"), {"n": n * 10 + i})).scalar_one()
        return total

    results = await asyncio.gather(*(client(n) for n in range(32)))
    assert results == [sum(n * 10 + i for i in range(5)) for n in range(32)]
    pool = engine.sync_engine.pool
    assert "Current Checked out connections: 0" in pool.status()
    assert (pool.checkedout(), pool.checkedin(), pool.overflow(), queue_of(engine).waiting) == (0, 2, 0, 0)


async def test_a_waiter_gives_up_after_the_pool_timeout_with_sqlalchemys_timeout_error(
    engine_of: Callable[..., AsyncEngine],
) -> None:
    engine = engine_of(db_pool_size=1, db_pool_timeout=0.3)
    holder = await engine.raw_connection()
    try:
        started = time.monotonic()
        with pytest.raises(PoolTimeoutError, match="QueuePool limit of size 1 overflow 0 reached"):
            await engine.raw_connection()
        assert 0.3 <= time.monotonic() - started <= 0.3 + SLACK
        assert queue_of(engine).waiting == 0
        assert engine.sync_engine.pool.checkedout() == 1
    finally:
        holder.close()
    assert engine.sync_engine.pool.checkedout() == 0
    async with engine.connect() as connection:  # the pool still serves
        assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1


async def test_the_pool_timeout_is_a_503_with_retry_after(clean_postgres: str) -> None:
    """A PUT waits for a row another transaction holds, on the pool's only connection; a GET queued behind it
    times out in the pool: 503 with Retry-After, never a 500."""
    settings = Settings(
        database_url=clean_postgres,
        db_pool_size=1,
        db_max_overflow=0,
        db_pool_timeout=0.3,
        db_lock_timeout=2.0,
        db_statement_timeout=5.0,
    )
    async with serve(settings) as client:
        created = (await client.post("/productos", json={"nombre": "bloqueado", "precio": 1})).json()
        item = f"/productos/{created['id']}"
        holder = await asyncpg.connect(clean_postgres, timeout=5)
        try:
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute("SELECT 1 FROM productos WHERE id = $1 FOR UPDATE", created["id"])
            put = asyncio.create_task(client.put(item, json={"nombre": "y", "precio": 3}))
            await asyncio.sleep(0.2)  # the PUT holds the connection, waiting for the row
            started = time.monotonic()
            waited = await client.get(item)
            elapsed = time.monotonic() - started
            await transaction.rollback()
        finally:
            await holder.close()
        assert waited.status_code == 503, waited.text
        assert waited.json() == {"detail": "database unavailable"}
        assert waited.headers["retry-after"].isdigit()
        assert elapsed <= 0.3 + SLACK, elapsed
        assert (await put).status_code == 200
        assert (await client.get(item)).status_code == 200


async def test_a_waiter_cancelled_as_a_connection_is_handed_to_it_loses_no_connection(
    engine_of: Callable[..., AsyncEngine],
) -> None:
    engine = engine_of(db_pool_size=1, db_pool_timeout=10)
    pool = engine.sync_engine.pool
    holder = await engine.raw_connection()
    first = asyncio.create_task(engine.raw_connection())
    second = asyncio.create_task(engine.raw_connection())
    await until_waiting(engine, 2)
    holder.close()  # handed to the first waiter...
    first.cancel()  # ...which is cancelled before its task could take it
    with pytest.raises(asyncio.CancelledError):
        await first
    connection = await second  # the connection went on to the next waiter
    assert pool.checkedout() == 1
    connection.close()
    assert (pool.checkedout(), pool.checkedin(), queue_of(engine).waiting) == (0, 1, 0)

    # With no one behind it, the connection goes back to the idle ones.
    holder = await engine.raw_connection()
    alone = asyncio.create_task(engine.raw_connection())
    await until_waiting(engine, 1)
    holder.close()
    alone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await alone
    assert (pool.checkedout(), pool.checkedin()) == (0, 1)


async def test_the_units_own_deadline_cancels_the_wait_and_leaves_the_pool_whole(
    engine_of: Callable[..., AsyncEngine],
) -> None:
    engine = engine_of(db_pool_size=1, db_pool_timeout=10)
    pool = engine.sync_engine.pool
    holder = await engine.raw_connection()
    try:
        with pytest.raises(DatabaseUnavailableError):
            await DriverConnection.checkout(engine, timeout=0.2)  # what a unit of work does, under its deadline
        assert queue_of(engine).waiting == 0 and pool.checkedout() == 1
    finally:
        holder.close()
    connection = await DriverConnection.checkout(engine, timeout=1)
    assert await connection.fetchval("SELECT 1") == 1
    await connection.release()
    assert pool.checkedout() == 0


async def test_an_invalidated_connection_handed_to_a_waiter_reconnects(
    engine_of: Callable[..., AsyncEngine],
) -> None:
    engine = engine_of(db_pool_size=1, db_pool_timeout=10)
    pool = engine.sync_engine.pool
    events: list[str] = []
    for name in ("connect", "checkout", "checkin", "invalidate"):
        event.listen(pool, name, lambda *_args, _name=name: events.append(_name))

    holder = await engine.raw_connection()
    old_pid = await backend_pid(holder)
    waiter = asyncio.create_task(engine.raw_connection())
    await until_waiting(engine, 1)
    holder.invalidate()  # a connection a failure left unusable: closed, its slot kept
    holder.close()
    connection = await waiter
    assert await backend_pid(connection) != old_pid  # the waiter's checkout opened a new one
    assert (await connection.driver_connection.fetchval("SELECT 1")) == 1  # type: ignore[union-attr]
    connection.close()
    assert (pool.checkedout(), pool.checkedin(), pool.overflow()) == (0, 1, 0)
    # SQLAlchemy's events, in order: the handed record reconnected for the waiter.
    assert events == ["connect", "checkout", "invalidate", "checkin", "connect", "checkout", "checkin"]

    # A lost server: every connection opened before is replaced on its next checkout (SQLAlchemy's
    # pool-wide invalidation, which the driver path uses).
    connection = await engine.raw_connection()
    before = await backend_pid(connection)
    pool._invalidate(connection, None)
    connection.close()
    again = await engine.raw_connection()
    assert await backend_pid(again) != before
    again.close()
    assert pool.checkedout() == 0


async def test_connections_are_recycled_and_dispose_keeps_the_pools_class(
    engine_of: Callable[..., AsyncEngine],
) -> None:
    engine = engine_of(db_pool_size=1, db_pool_timeout=10, db_pool_recycle=1)
    metrics = Metrics()
    instrument_engine(engine, metrics=metrics, tracing=None, pool_name="recycle")  # its timing subclass
    connection = await engine.raw_connection()
    first = await backend_pid(connection)
    connection.close()
    await asyncio.sleep(1.1)
    connection = await engine.raw_connection()
    assert await backend_pid(connection) != first
    connection.close()

    await engine.dispose()
    pool = engine.sync_engine.pool
    assert isinstance(pool, FairAsyncQueuePool) and isinstance(pool._pool, FairAsyncQueue)
    assert type(pool).__name__ == "TimedFairAsyncQueuePool"
    assert (pool.size(), pool.timeout(), pool._pool.use_lifo) == (1, 10, True)
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
