"""The HTTP API end to end: the real app, its lifespan and its database, through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from productos import Settings
from productos.services.productos.app import create_app

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app (lifespan included) and yield a client that talks to it in process."""
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest) -> str:
    """An empty database: the test's own SQLite file (the app migrates it), or the session's PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "clean_postgres"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def make_client(database_url: str) -> ClientFactory:
    """``async with make_client(max_body_size=1000) as client``: the app on this test's database."""

    def factory(**overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return serve(Settings(database_url=database_url, **overrides))

    return factory


@pytest.fixture
async def client(make_client: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as client:
        yield client
