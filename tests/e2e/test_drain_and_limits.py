"""The app's side of leaving service and of the concurrency bound, in process on the embedded database.

The server (``ProductosUvicornWorker``) puts a ``Drain`` in the lifespan state; here a wrapper does the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from productos import Settings
from productos.http.drain import Drain
from productos.http.limits import ConcurrencyLimitMiddleware
from productos.services.productos.app import create_app


def with_drain(app: Any, drain: Drain) -> Any:
    """What uvicorn does with the lifespan state: each request sees a copy, here with the drain in it."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "state": {**scope.get("state", {}), Drain.STATE_KEY: drain}}
        await app(scope, receive, send)

    return wrapped


@pytest.fixture
async def draining_client(sqlite_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Drain]]:
    drain = Drain()
    app = create_app(Settings(database_url=sqlite_url))
    async with LifespanManager(with_drain(app, drain)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, drain


async def test_readiness_turns_503_draining_at_once_and_liveness_stays_200(
    draining_client: tuple[httpx.AsyncClient, Drain],
) -> None:
    client, drain = draining_client
    assert (await client.get("/health")).json()["status"] == "healthy"
    drain.retire()  # a reload: the instance stays in service
    assert (await client.get("/health")).status_code == 200
    drain.drain()
    response = await client.get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "draining", "service": "productos-api"}
    assert response.headers["retry-after"] == "1" and response.headers["cache-control"] == "no-store"
    assert (await client.get("/health/live")).status_code == 200
    assert (await client.get("/productos")).status_code == 200  # still serving


async def test_without_a_server_drain_readiness_is_the_databases(client: httpx.AsyncClient) -> None:
    """uvicorn alone, or the plain UvicornWorker: no drain in the state, /health as before."""
    assert (await client.get("/health")).status_code == 200


# --- the concurrency bound, on the middleware alone -------------------------------------------------------------


class Gate:
    """An ASGI app whose requests wait until the gate opens."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.entered += 1
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        await self.open.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


def bounded(gate: Gate, limit: int) -> tuple[httpx.AsyncClient, ConcurrencyLimitMiddleware]:
    middleware = ConcurrencyLimitMiddleware(gate, max_concurrent_requests=limit)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware), base_url="http://testserver")
    return client, middleware


async def test_the_bound_refuses_what_exceeds_it_and_frees_places_as_requests_end() -> None:
    gate = Gate()
    client, middleware = bounded(gate, 3)
    async with client:
        held = [asyncio.create_task(client.get("/x")) for _ in range(3)]
        while gate.entered < 3:
            await asyncio.sleep(0)
        refused = await client.get("/x")
        assert refused.status_code == 503 and refused.json() == {"detail": "server busy"}
        assert refused.headers["retry-after"] == "1"
        assert gate.entered == 3  # never reached the app
        health = asyncio.create_task(client.get("/health"))  # probes pass even when full
        while gate.entered < 4:
            await asyncio.sleep(0)
        gate.open.set()
        assert [r.status_code for r in await asyncio.gather(*held, health)] == [200] * 4
        assert middleware.active == 0 and middleware.refused == 1
        assert (await client.get("/x")).status_code == 200


async def test_a_failing_request_gives_its_place_back() -> None:
    gate = Gate()
    gate.open.set()
    client, middleware = bounded(gate, 1)
    async with client:
        with pytest.raises(RuntimeError):
            await client.get("/boom")
        assert middleware.active == 0
        assert (await client.get("/x")).status_code == 200


async def test_zero_means_no_bound() -> None:
    gate = Gate()
    client, middleware = bounded(gate, 0)
    async with client:
        held = [asyncio.create_task(client.get("/x")) for _ in range(50)]
        while gate.entered < 50:
            await asyncio.sleep(0)
        gate.open.set()
        assert {r.status_code for r in await asyncio.gather(*held)} == {200}
        assert middleware.refused == 0


async def test_create_service_bounds_requests_as_the_settings_say(sqlite_url: str) -> None:
    """PRODUCTOS_MAX_CONCURRENT_REQUESTS=1: while a POST's body is still arriving, the next request is refused,
    and the refusal carries X-Request-ID like every response."""
    app = create_app(Settings(database_url=sqlite_url, max_concurrent_requests=1))
    rest = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"nombre": "lento", '
        await rest.wait()
        yield b'"precio": 1}'

    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            post = asyncio.create_task(
                client.post("/productos", content=slow_body(), headers={"content-type": "application/json"})
            )
            await asyncio.sleep(0.2)
            refused = await client.get("/productos")
            assert refused.status_code == 503 and refused.json() == {"detail": "server busy"}
            assert refused.headers["retry-after"] == "1" and refused.headers["x-request-id"]
            assert (await client.get("/health")).status_code == 200
            rest.set()
            assert (await post).status_code == 201
            assert (await client.get("/productos")).status_code == 200
