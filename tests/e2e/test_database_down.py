"""Without its database the app starts, answers 503 quickly (/health too), and leaks no connection details."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from productos import Settings
from tests.e2e.conftest import serve

PASSWORD = "Pa55-w0rd-do-not-leak"


def assert_no_leak(response: httpx.Response, host: str, port: int) -> None:
    exposed = response.text + "".join(f"{k}: {v}\n" for k, v in response.headers.items())
    for secret in (PASSWORD, host, f":{port}", "app@", "postgresql"):
        assert secret not in exposed, f"{secret!r} leaked in {exposed!r}"


@pytest.fixture
async def hung_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers: a database that hangs."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def check_unavailable(settings: Settings, host: str, port: int, within: float) -> None:
    async with serve(settings) as client:
        live = await client.get("/health/live")
        assert live.status_code == 200

        start = time.monotonic()
        health = await client.get("/health")
        assert time.monotonic() - start < within
        assert health.status_code == 503
        assert health.json()["status"] == "unhealthy"
        assert health.json()["service"] == "productos-api"
        assert_no_leak(health, host, port)

        for method, path, body in [
            ("GET", "/productos/1", None),
            ("GET", "/productos", None),
            ("POST", "/productos", {"nombre": "Mesa", "precio": 1}),
            ("PATCH", "/productos/1", {"stock": 1}),
            ("DELETE", "/productos/1", None),
        ]:
            start = time.monotonic()
            response = await client.request(method, path, json=body)
            assert time.monotonic() - start < within, (method, path)
            assert response.status_code == 503, (method, path, response.text)
            assert response.json() == {"detail": "database unavailable"}
            assert response.headers["retry-after"].isdigit()
            assert_no_leak(response, host, port)

        # Requests that need no database are still served.
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/health/live")).status_code == 200
        assert (await client.post("/productos", content=b"{")).status_code == 422


async def test_closed_port(unused_tcp_port: int) -> None:
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:{unused_tcp_port}/productos"
    await check_unavailable(Settings(database_url=url), "127.0.0.1", unused_tcp_port, within=3.0)


async def test_port_one(unused_tcp_port: int) -> None:
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:1/productos"
    await check_unavailable(Settings(database_url=url), "127.0.0.1", 1, within=3.0)


async def test_hung_database_answers_within_the_timeouts(hung_server: int) -> None:
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:{hung_server}/productos"
    settings = Settings(database_url=url, health_timeout=0.5, db_connect_timeout=0.5, db_pool_timeout=0.5)
    await check_unavailable(settings, "127.0.0.1", hung_server, within=2.5)


@pytest.mark.postgres
async def test_refused_login_is_503_not_500(postgres_url: str) -> None:
    """A login the server refuses (an unknown role; a password mid-rotation) is the database being unavailable
    to this service, not a server bug."""
    from sqlalchemy.engine import make_url

    real = make_url(postgres_url)
    url = real.set(username="app", password=PASSWORD).render_as_string(hide_password=False)
    await check_unavailable(Settings(database_url=url), real.host or "", real.port or 5432, within=3.0)


@pytest.mark.postgres
async def test_a_database_that_does_not_exist_is_503_not_500(postgres_url: str) -> None:
    """SQLSTATE 3D000 at login (a wrong name, a database dropped or not yet restored): unavailable, on /health
    and on every request."""
    from sqlalchemy.engine import make_url

    real = make_url(postgres_url)
    url = real.set(database="productos_no_such_database").render_as_string(hide_password=False)
    await check_unavailable(Settings(database_url=url), real.host or "", real.port or 5432, within=3.0)
