"""The client's address and scheme behind trusted proxies, in a service built with ``create_service``: uvicorn's
proxy-headers handling with ``PRODUCTOS_TRUSTED_PROXIES``, applied by the app itself, so that it holds outside
gunicorn too (gunicorn's workers: tests/integration/test_observability_gunicorn.py).

The access line's ``client.address`` and ``url.scheme`` are what the route sees as ``request.client`` and
``request.url.scheme``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI, Request

from productos import Settings, create_service
from tests.integration.tcp_proxy import free_port
from tests.log_lines import JsonLines

router = APIRouter()


@router.get("/whoami")
async def whoami(request: Request) -> dict[str, Any]:
    return {"client": request.client.host if request.client else None, "scheme": request.url.scheme}


def make_app(database_url: str, trusted_proxies: str) -> FastAPI:
    settings = Settings(database_url=database_url, trusted_proxies=trusted_proxies)
    return create_service(title="direcciones", routers=[router], settings=settings)


@pytest.fixture
def access() -> Iterator[JsonLines]:
    collector = JsonLines()
    logging.getLogger("productos.access").addHandler(collector)
    try:
        yield collector
    finally:
        logging.getLogger("productos.access").removeHandler(collector)


@pytest.mark.parametrize(
    ("trusted", "peer", "client", "scheme"),
    [
        ("10.0.0.0/16", "10.0.0.5", "203.0.113.9", "https"),  # the ALB's subnet: its headers are believed
        ("10.0.0.0/16", "198.51.100.7", "198.51.100.7", "http"),  # anyone else's are ignored
        ("", "10.0.0.5", "10.0.0.5", "http"),  # nobody trusted (the default)
        # Every hop trusted: the leftmost address, whatever the client sent (only when nothing else can connect).
        ("*", "198.51.100.7", "6.6.6.6", "https"),
    ],
)
async def test_the_access_line_names_the_client_the_trusted_proxy_forwards_for(
    sqlite_url: str, access: JsonLines, trusted: str, peer: str, client: str, scheme: str
) -> None:
    app = make_app(sqlite_url, trusted)
    headers = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9", "X-Forwarded-Proto": "https", "X-Request-ID": "who"}
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=(peer, 41000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.get("/whoami", headers=headers)
    assert response.json() == {"client": client, "scheme": scheme}
    (line,) = [line for line in access.lines if line.get("request_id") == "who"]
    assert (line["client.address"], line["url.scheme"], line["http.route"]) == (client, scheme, "/whoami")


@pytest.mark.parametrize(("trusted", "client"), [("127.0.0.1", "203.0.113.9"), ("10.0.0.0/8", "127.0.0.1")])
async def test_under_plain_uvicorn_the_app_applies_the_setting(
    sqlite_url: str, access: JsonLines, trusted: str, client: str
) -> None:
    """A real uvicorn server whose own proxy-headers handling is off: what the app does alone."""
    port = free_port()
    config = uvicorn.Config(
        make_app(sqlite_url, trusted), host="127.0.0.1", port=port, log_config=None, proxy_headers=False
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), serving.exception()
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            response = await http.get("/whoami", headers={"X-Forwarded-For": "203.0.113.9", "X-Request-ID": "real"})
    finally:
        server.should_exit = True
        await serving
    assert response.json()["client"] == client
    (line,) = [line for line in access.lines if line.get("request_id") == "real"]
    assert line["client.address"] == client
