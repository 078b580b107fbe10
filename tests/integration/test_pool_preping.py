"""Idle-only pre-ping: stale pooled connections are replaced unseen; busy ones cost no extra round trip."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from productos.infra.db.engine import create_engine
from productos.services.productos.domain import NewProducto
from tests.conftest import make_settings
from tests.integration.unit_paths import PATHS, Factory

pytestmark = pytest.mark.postgres


APPLICATION = "productos-preping-test"


async def _terminate_our_backends(postgres_url: str) -> int:
    """Kill this test's engine's connections (found by application_name), as a failover would."""
    conn = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", APPLICATION
        )
        return len(rows)
    finally:
        await conn.close()


@pytest.fixture(params=[path for path, _ in PATHS], ids=[name for _, name in PATHS])
def factory_class(request: pytest.FixtureRequest) -> Factory:
    made: Factory = request.param
    return made


async def _factory(postgres_url: str, idle: float, factory_class: Factory) -> tuple[list[str], Any]:
    engine = create_engine(make_settings(postgres_url, db_pool_pre_ping_idle=idle, service_name=APPLICATION))
    pings: list[str] = []

    original_ping = engine.sync_engine.dialect.do_ping

    def counting_ping(dbapi_connection: object) -> bool:
        pings.append("ping")
        return bool(original_ping(dbapi_connection))

    engine.sync_engine.dialect.do_ping = counting_ping  # type: ignore[method-assign]
    return pings, factory_class(engine)


async def test_busy_connections_are_not_pinged_idle_ones_are(clean_postgres: str, factory_class: Factory) -> None:
    pings, factory = await _factory(clean_postgres, idle=0.5, factory_class=factory_class)
    try:
        async with factory() as uow:
            created = await uow.productos.add(NewProducto(nombre="p", precio=Decimal("1.00")))
            await uow.commit()
        for _ in range(20):
            async with factory(read_only=True) as uow:
                assert await uow.productos.get(created.id) is not None
        assert pings == []  # reused within 0.5 s: no ping
        await asyncio.sleep(0.6)
        async with factory(read_only=True) as uow:
            assert await uow.productos.get(created.id) is not None
        assert pings == ["ping"]
    finally:
        await factory.engine.dispose()


async def test_a_stale_idle_connection_is_replaced_without_an_error(
    clean_postgres: str, factory_class: Factory
) -> None:
    _, factory = await _factory(clean_postgres, idle=0.2, factory_class=factory_class)
    try:
        async with factory(read_only=True) as uow:
            await uow.productos.list(limit=1)
        assert await _terminate_our_backends(clean_postgres) >= 1  # a failover, a restart, an idle-timeout
        await asyncio.sleep(0.3)
        async with factory(read_only=True) as uow:
            assert await uow.productos.list(limit=1) == []
    finally:
        await factory.engine.dispose()


async def test_connections_killed_in_the_pool_are_replaced_on_checkout_without_a_failure(
    clean_postgres: str, factory_class: Factory
) -> None:
    """A failover or a restart ends every pooled connection. asyncpg sees each one's end, so a checkout replaces
    it without a ping (none here: idle=3600) and no request fails. A connection whose end is not seen yet fails
    once, and takes the pool's older connections with it (test_driver)."""
    _, factory = await _factory(clean_postgres, idle=3600, factory_class=factory_class)

    async def read() -> None:
        async with factory(read_only=True) as uow:
            await uow.productos.list(limit=1)
            await asyncio.sleep(0.05)  # hold the connection, so that five readers use five connections

    try:
        await asyncio.gather(*(read() for _ in range(5)))
        assert factory.engine.sync_engine.pool.checkedin() == 5  # type: ignore[attr-defined]
        assert await _terminate_our_backends(clean_postgres) == 5  # a failover
        await asyncio.sleep(0.1)
        await asyncio.gather(*(read() for _ in range(5)))
        await read()
    finally:
        await factory.engine.dispose()
