"""Deadlines are deadlines: with PostgreSQL hung (a proxy that stops moving bytes), every answer comes within the
bound its setting promises, plus scheduling slack; a locked row gives a fast 409 and leaves the pool to the
other requests.

Nothing that closes or invalidates a connection may wait inside a request: asyncpg's graceful close waits for
the server (up to 2 s, and for a cancel request first), which a hung server never gives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from productos import Settings
from tests.e2e.conftest import serve
from tests.integration.tcp_proxy import ControllableProxy

pytestmark = pytest.mark.postgres

#: Scheduling slack over a promised bound (a 2-core machine running PostgreSQL, the app and the test).
SLACK = 0.4

HEALTH_TIMEOUT = 0.6
POOL_TIMEOUT = 0.8
STATEMENT_TIMEOUT = 1.2
PRE_PING_IDLE = 0.2


@pytest.fixture
def proxy(clean_postgres: str) -> Iterator[tuple[ControllableProxy, str]]:
    parts = urlsplit(clean_postgres)
    with ControllableProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        proxy.set_mode("forward")
        yield proxy, clean_postgres.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")


@pytest.fixture
async def hung_client(proxy: tuple[ControllableProxy, str]) -> AsyncIterator[httpx.AsyncClient]:
    _, url = proxy
    settings = Settings(
        database_url=url,
        health_timeout=HEALTH_TIMEOUT,
        db_pool_timeout=POOL_TIMEOUT,
        db_connect_timeout=POOL_TIMEOUT,
        db_statement_timeout=STATEMENT_TIMEOUT,
        db_pool_pre_ping_idle=PRE_PING_IDLE,
        db_pool_size=4,
        db_max_overflow=0,
    )
    async with serve(settings) as client:
        yield client


async def timed(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = await client.request(method, path, **kwargs)
    return response, time.monotonic() - start


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()


async def recovered(client: httpx.AsyncClient, item: str) -> None:
    deadline = time.monotonic() + 5
    while (await client.get("/health")).status_code != 200:
        assert time.monotonic() < deadline, "no recovery after the hang"
        await asyncio.sleep(0.1)
    # Every pooled connection busy at once, so that several are open when the database hangs next.
    assert {r.status_code for r in await asyncio.gather(*(client.get(item) for _ in range(4)))} == {200}


async def test_a_hung_database_is_answered_within_each_promised_bound(
    proxy: tuple[ControllableProxy, str], hung_client: httpx.AsyncClient
) -> None:
    control, _ = proxy
    client = hung_client
    created = await client.post("/productos", json={"nombre": "Mesa", "precio": 1})
    item = f"/productos/{created.json()['id']}"
    await recovered(client, item)

    # Idle connections in the pool when the database hangs: each checkout pre-pings one, and the ping hangs.
    await asyncio.sleep(PRE_PING_IDLE * 2)
    control.set_mode("hang")
    response, elapsed = await timed(client, "GET", "/health")  # the first probe after the hang
    assert response.status_code == 503 and response.json()["status"] == "unhealthy"
    assert elapsed <= HEALTH_TIMEOUT + SLACK, elapsed
    for _ in range(2):
        response, elapsed = await timed(client, "GET", item)
        assert_unavailable(response)
        assert elapsed <= POOL_TIMEOUT + SLACK, elapsed  # the pre-ping or the login, under the pool's deadline
        response, elapsed = await timed(client, "GET", "/health")
        assert response.status_code == 503 and elapsed <= HEALTH_TIMEOUT + SLACK, elapsed

    # Statements in flight when the database hangs, on connections used a moment ago (no pre-ping): the
    # statement timeout, then 503.
    control.set_mode("forward")
    await recovered(client, item)
    control.set_mode("hang")
    answers = await asyncio.gather(
        *(timed(client, "GET", item) for _ in range(3)),
        timed(client, "PUT", item, json={"nombre": "x", "precio": 2}),
    )
    for response, elapsed in answers:
        assert_unavailable(response)
        assert elapsed <= STATEMENT_TIMEOUT + SLACK, elapsed

    control.set_mode("forward")
    await recovered(client, item)


async def test_a_locked_row_gives_a_fast_409_and_does_not_starve_the_pool(clean_postgres: str) -> None:
    """Two writers wait on a row another transaction holds, on both of the pool's connections: they give up
    after the lock timeout (each wait is bounded: first for the row's tuple lock, then for the holder's
    transaction), and the reads queued behind them get a connection. Without lock_timeout the writers would
    hold both connections for the statement timeout (5 s) and the reads would time out in the pool (503)."""
    lock_timeout = 0.3
    settings = Settings(
        database_url=clean_postgres,
        db_pool_size=2,
        db_max_overflow=0,
        db_pool_timeout=2.0,
        db_statement_timeout=5.0,
        db_lock_timeout=lock_timeout,
    )
    async with serve(settings) as client:
        locked = (
            f"/productos/{(await client.post('/productos', json={'nombre': 'bloqueado', 'precio': 1})).json()['id']}"
        )
        free = f"/productos/{(await client.post('/productos', json={'nombre': 'libre', 'precio': 1})).json()['id']}"
        holder = await asyncpg.connect(clean_postgres, timeout=5)
        try:
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute("SELECT 1 FROM productos WHERE id = $1 FOR UPDATE", int(locked.rpartition("/")[2]))
            writes = await asyncio.gather(
                timed(client, "PUT", locked, json={"nombre": "y", "precio": 3}),
                timed(client, "PATCH", locked, json={"stock": 4}),
                *(timed(client, "GET", free) for _ in range(4)),
            )
            alone, alone_elapsed = await timed(client, "DELETE", locked)
            await transaction.rollback()
        finally:
            await holder.close()

        for response, elapsed in [*writes[:2], (alone, alone_elapsed)]:
            assert response.status_code == 409, response.text
            assert response.json() == {"detail": "the resource is being changed by another request: retry"}
            assert response.headers["retry-after"].isdigit()
            assert elapsed <= 2 * lock_timeout + SLACK, elapsed
        assert [response.status_code for response, _ in writes[2:]] == [200] * 4
        # The lock gone, the same write succeeds: nothing was left half-done.
        after = await client.put(locked, json={"nombre": "y", "precio": 3})
        assert after.status_code == 200 and after.json()["version"] == 2
