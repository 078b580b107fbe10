"""productos as a library: the products use cases inside another program, then the service in-process.

Run: ``python examples/use_as_library.py`` (embedded SQLite in a temporary folder, no server, no AWS).
"""

from __future__ import annotations

import asyncio
import tempfile
from decimal import Decimal
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from productos import Settings, open_runtime
from productos.services.productos.app import MIGRATIONS, create_app, unit_of_work_factory
from productos.services.productos.domain import NewProducto, ProductoPatch
from productos.services.productos.service import ProductoService


async def use_the_service_layer(database_url: str) -> None:
    """The runtime (engine, pool, migrations on SQLite) and use cases, without HTTP: what a batch job does."""
    async with open_runtime(Settings(database_url=database_url), migrations=[MIGRATIONS]) as runtime:
        # SQL on the asyncpg connection for PostgreSQL, SQLAlchemy Core for SQLite: whichever suits the engine.
        service = ProductoService(unit_of_work_factory(runtime.engine))
        lamp = await service.create(NewProducto(nombre="Lámpara", precio=Decimal("24.90"), stock=5))
        lamp = await service.update(lamp.id, ProductoPatch({"stock": 4}), expected_version=lamp.version)
        page = await service.list(limit=10)
        print(f"service layer: {len(page.items)} product(s); {lamp.nombre} has stock {lamp.stock}, v{lamp.version}")


async def call_the_app_in_process(database_url: str) -> None:
    """The full HTTP app with its lifespan, called in-process (as tests and other services may do)."""
    app = create_app(Settings(database_url=database_url))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://productos") as client:
            created = await client.post("/productos", json={"nombre": "Silla", "precio": 59.99})
            listing = await client.get("/productos", params={"limit": 1})
            print(f"http: POST {created.status_code}, GET /productos {listing.status_code}, next: {listing.links}")
            health = await client.get("/health")
            print(f"http: /health {health.status_code} {health.json()['status']}")


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'example.db'}"
        await use_the_service_layer(url)
        await call_the_app_in_process(url)


if __name__ == "__main__":
    asyncio.run(main())
