"""``DATABASE_READ_URL`` against a real streaming replica: a throwaway primary cluster, and a second cluster made
from it with ``pg_basebackup -R`` (both on free ports, ``max_connections`` 20; the shared server is never touched).

Reads are proven to come from the replica by what only the replica holds: with its replay paused
(``pg_wal_replay_pause()``), a row changed on the primary still reads as it was. Then: read-your-writes within a
request, and not across requests; replication lag past ``DB_READ_MAX_LAG`` (reads fall back to the primary); a
replica connection lost mid-unit (the read runs again on the primary); the replica stopped (reads served, /health
200 with ``"replica": "unavailable"``); ``productos check``; both servers behind PgBouncer in transaction mode
(``DB_POOLER=transaction``); and promotion (the service keeps answering).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, Request
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from productos import Settings
from productos.db import (
    DriverConnection,
    DriverUnitOfWorkBase,
    ReadReplica,
    SqlAlchemyUnitOfWorkBase,
    SqlConnection,
    SqlUnitOfWork,
    read_your_writes,
)
from productos.runtime import create_service, open_engine, open_runtime
from productos.services.productos.app import MIGRATIONS, productos_state
from productos.services.productos.domain import ProductoPatch
from productos.services.productos.routes import router as productos_router
from productos.services.productos.service import ProductoService
from productos.testing import PgBouncer
from tests.integration.tcp_proxy import free_port
from tests.integration.throwaway_cluster import ThrowawayCluster, throwaway_cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DATABASE = "replicas"
#: Small clusters: the machine is shared (the standby needs max_connections at least the primary's).
OPTIONS = ("max_connections=20", "shared_buffers=16MB")
SECRET = "r3plica-@:/?#%-pw"

IN_RECOVERY = select(func.pg_is_in_recovery())
BACKEND_PID = select(func.pg_backend_pid())


@dataclass(frozen=True)
class Replication:
    primary: ThrowawayCluster
    replica: ThrowawayCluster

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": self.primary.url(DATABASE),
            "database_read_url": self.replica.url(DATABASE),
            "db_pool_size": 2,
            "db_max_overflow": 1,
            "db_pool_timeout": 2.0,
            "db_connect_timeout": 1.0,
            "migrate_on_start": True,
            "metrics_publisher": "none",
            "otel_exporter": "none",
            "log_level": "warning",
        }
        return Settings(**{**values, **overrides})

    async def replayed(self, within: float = 10) -> None:
        """Wait until the replica has replayed everything the primary has written so far."""
        primary = await self.primary.admin(DATABASE)
        replica = await self.replica.admin(DATABASE)
        try:
            target = await primary.fetchval("SELECT pg_current_wal_lsn()")
            deadline = time.monotonic() + within
            while not await replica.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", target):
                assert time.monotonic() < deadline, "the replica did not catch up"
                await asyncio.sleep(0.02)
        finally:
            await primary.close()
            await replica.close()

    async def on_primary(self, sql: str, *args: Any) -> Any:
        conn = await self.primary.admin(DATABASE)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def on_replica(self, sql: str, *args: Any) -> Any:
        conn = await self.replica.admin(DATABASE)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    @asynccontextmanager
    async def replay_paused(self) -> AsyncIterator[None]:
        """Pause the replica's replay (it keeps receiving WAL, and applies none of it) until the block exits."""
        await self.on_replica("SELECT pg_wal_replay_pause()")
        await until(lambda: self._pause_state("paused"), within=5)
        try:
            yield
        finally:
            await self.on_replica("SELECT pg_wal_replay_resume()")

    async def _pause_state(self, state: str) -> bool:
        return bool(await self.on_replica("SELECT pg_get_wal_replay_pause_state() = $1", state))


async def until(predicate: Callable[[], Awaitable[bool]], *, within: float, every: float = 0.05) -> float:
    """Poll ``predicate`` until it holds; the seconds it took."""
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < within, f"not within {within} s"
        await asyncio.sleep(every)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def replication() -> Iterator[Replication]:
    with (
        throwaway_cluster(prefix="productos_rp_", options=OPTIONS) as primary,
        throwaway_cluster(prefix="productos_rr_", options=OPTIONS) as replica,
    ):
        admin = ["-h", "127.0.0.1", "-U", "postgres"]
        subprocess.run(["createdb", *admin, "-p", str(primary.port), DATABASE], check=True, timeout=60)
        data = subprocess.run(
            ["psql", *admin, "-p", str(replica.port), "-d", "postgres", "-Atc", "SHOW data_directory"],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout.strip()  # fmt: skip
        # The second cluster becomes a standby of the first: its data directory replaced by a base backup, with
        # standby.signal and primary_conninfo (-R); its own configuration (port, max_connections) stays in /etc.
        replica.ctl("stop")
        shutil.rmtree(data)
        os.mkdir(data, 0o700)  # empty, the server's own: its parent may be root's
        shutil.chown(data, "postgres", "postgres")
        backup = subprocess.run(
            [f"/usr/lib/postgresql/{replica.version}/bin/pg_basebackup", "-D", data, *admin, "-p", str(primary.port),
             "-R", "-X", "stream", "-c", "fast", "--no-sync"],
            capture_output=True, text=True, timeout=120, user="postgres", group="postgres", cwd="/",
        )  # fmt: skip
        assert backup.returncode == 0, backup.stderr
        replica.ctl("start")
        yield Replication(primary, replica)


@pytest.fixture(scope="module")
async def migrated(replication: Replication) -> Replication:
    # The runtime applies the migrations at start (migrate_on_start), on the primary; they reach the replica.
    async with open_runtime(replication.settings(database_read_url=None), migrations=[MIGRATIONS]):
        pass
    assert await replication.on_replica("SELECT pg_is_in_recovery()")
    await replication.replayed()
    return replication


# --- the service, in process -------------------------------------------------------------------------------------

probe_router = APIRouter()


@probe_router.post("/probe/rename/{producto_id}")
async def rename(producto_id: int, nombre: str, request: Request) -> dict[str, str]:
    """Read, write, read again, in one request: the second read must see the write."""
    service: ProductoService = request.state.productos
    before = await service.get(producto_id)
    await service.update(producto_id, ProductoPatch({"nombre": nombre}))
    after = await service.get(producto_id)
    return {"before": before.nombre, "after": after.nombre}


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_service(
        title="productos-api",
        routers=[productos_router, probe_router],
        settings=settings,
        migrations=[MIGRATIONS],
        state=productos_state,
    )
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


async def _create(client: httpx.AsyncClient, nombre: str) -> int:
    response = await client.post("/productos", json={"nombre": nombre, "precio": 9.5})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def _nombre(client: httpx.AsyncClient, producto_id: int) -> str:
    response = await client.get(f"/productos/{producto_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["nombre"])


async def _health(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/health")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _replica_is(client: httpx.AsyncClient, state: str) -> bool:
    return (await _health(client)).get("replica") == state


# --- the tests, in order: promotion is last ---------------------------------------------------------------------


async def test_reads_come_from_the_replica_and_writes_go_to_the_primary(migrated: Replication) -> None:
    async with serve(migrated.settings(db_read_max_lag=60)) as client:
        health = await _health(client)
        assert health["database"] == "connected" and health["replica"] == "connected", health
        producto_id = await _create(client, "original")
        await migrated.replayed()
        async with migrated.replay_paused():
            # Changed on the primary only: what the service reads is the replica's.
            await migrated.on_primary("UPDATE productos SET nombre = 'primary only' WHERE id = $1", producto_id)
            assert await _nombre(client, producto_id) == "original"
            listed = (await client.get("/productos", params={"limit": 100})).json()
            assert [p["nombre"] for p in listed if p["id"] == producto_id] == ["original"]

            # A write goes to the primary, whatever the replica says.
            response = await client.put(f"/productos/{producto_id}", json={"nombre": "put", "precio": 9.5})
            assert response.status_code == 200 and response.json()["nombre"] == "put", response.text
            assert await migrated.on_primary("SELECT nombre FROM productos WHERE id = $1", producto_id) == "put"

            # Read-your-writes within a request: the read after the write is the primary's.
            response = await client.post(f"/probe/rename/{producto_id}", params={"nombre": "renamed"})
            assert response.status_code == 200, response.text
            assert response.json() == {"before": "original", "after": "renamed"}

            # Not across requests: the next request reads from the replica, which has not replayed the write.
            assert await _nombre(client, producto_id) == "original"
            assert (await _health(client))["replica"] == "connected"
        await migrated.replayed()
        assert await _nombre(client, producto_id) == "renamed"

        # The two pools, told apart by their name.
        metrics = (await client.get("/metrics")).text
        for pool in ("primary", "replica"):
            assert f'db_client_connection_max{{db_client_connection_pool_name="{pool}"}} 3.0' in metrics, metrics


async def test_reads_fall_back_to_the_primary_past_the_maximum_lag(migrated: Replication) -> None:
    async with serve(migrated.settings(db_read_max_lag=1)) as client:
        producto_id = await _create(client, "before the lag")
        await migrated.replayed()
        await until(lambda: _replica_is(client, "connected"), within=5)
        # Idle, with nothing to replay, the last replayed transaction grows old: that is no lag.
        await asyncio.sleep(2.0)
        assert (await _health(client))["replica"] == "connected"
        async with migrated.replay_paused():
            await migrated.on_primary("UPDATE productos SET nombre = 'while lagging' WHERE id = $1", producto_id)
            # The replica keeps receiving and applies nothing: its lag grows past 1 s, and a sample sees it.
            waited = await until(lambda: _replica_is(client, "lagging"), within=6)
            print(f"lagging after {waited:.1f} s")
            for _ in range(5):
                assert await _nombre(client, producto_id) == "while lagging"
            health = await _health(client)
            assert health["status"] == "healthy" and health["database"] == "connected"
        await until(lambda: _replica_is(client, "connected"), within=6)
        assert await _nombre(client, producto_id) == "while lagging"


class ProbeUnit(SqlUnitOfWork):
    """A unit of work that hands its connection out as it is."""

    connection: SqlConnection

    def _bind(self, connection: SqlConnection) -> None:
        self.connection = connection


async def test_read_your_writes_scopes(migrated: Replication) -> None:
    async with open_runtime(migrated.settings()) as runtime:
        assert runtime.replica is not None and runtime.replica.state == "connected"
        units = ProbeUnit.factory(runtime.engine, replica=runtime.replica, acquire_timeout=2)

        async def reads_replica() -> bool:
            async with units(read_only=True) as unit:
                return bool(await unit.connection.fetch_value(IN_RECOVERY))

        with read_your_writes():
            assert await reads_replica()
            async with units():
                pass  # a transaction left without commit() wrote nothing
            assert await reads_replica()
            async with units() as unit:
                await unit.connection.execute(select(func.pg_sleep(0)))
                await unit.commit()
            assert not await reads_replica()
        with read_your_writes():
            assert await reads_replica()  # a new scope starts without a write

            async def write() -> None:
                async with units(autocommit=True) as unit:
                    await unit.commit()

            await asyncio.create_task(write())  # a write in a task of the scope counts for the whole scope
            assert not await reads_replica()


async def test_a_read_whose_replica_connection_dies_runs_again_on_the_primary(migrated: Replication) -> None:
    async with open_runtime(migrated.settings()) as runtime:
        replica = runtime.replica
        assert replica is not None and replica.state == "connected"
        units = ProbeUnit.factory(runtime.engine, replica=replica, acquire_timeout=2)
        admin = await migrated.replica.admin(DATABASE)
        try:
            async with units(read_only=True) as unit:
                assert await unit.connection.fetch_value(IN_RECOVERY) is True
                pid = await unit.connection.fetch_value(BACKEND_PID)
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)

                async def gone() -> bool:
                    return not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)

                await until(gone, within=5)
                # The statement fails on the replica, runs again on the primary, and the unit stays there.
                assert await unit.connection.fetch_value(IN_RECOVERY) is False
                assert await unit.connection.fetch_value(IN_RECOVERY) is False
        finally:
            await admin.close()
        assert replica.state == "unavailable"

        async def connected() -> bool:
            return replica.state == "connected"

        await until(connected, within=5)  # the next background sample finds it well


class DriverProbe(DriverUnitOfWorkBase):
    def _bind(self, connection: DriverConnection) -> None:
        self.connection = connection

    async def in_recovery(self) -> bool:
        return bool(await self.connection.fetchval("SELECT pg_is_in_recovery()"))


class SqlAlchemyProbe(SqlAlchemyUnitOfWorkBase):
    def _bind(self, connection: AsyncConnection) -> None:
        self.connection = connection

    async def in_recovery(self) -> bool:
        return bool((await self.connection.execute(IN_RECOVERY)).scalar())


class StatementsProbe(ProbeUnit):
    async def in_recovery(self) -> bool:
        return bool(await self.connection.fetch_value(IN_RECOVERY))


@pytest.mark.parametrize("unit", [StatementsProbe, DriverProbe, SqlAlchemyProbe])
async def test_every_kind_of_unit_reads_from_the_replica_and_falls_back_when_it_cannot_connect(
    migrated: Replication, unit: Any
) -> None:
    settings = migrated.settings()
    async with open_runtime(settings) as runtime, open_engine(settings, url=SecretStr(gone_url())) as gone:
        assert runtime.replica is not None
        with read_your_writes():
            async with unit.factory(runtime.engine, replica=runtime.replica, acquire_timeout=2)(read_only=True) as uow:
                assert await uow.in_recovery()  # the replica
            async with unit.factory(runtime.engine, replica=runtime.replica)(autocommit=True) as uow:
                assert not await uow.in_recovery()  # a unit that writes: the primary

        # A replica that a sample found well a moment ago, and that refuses connections now.
        down = ReadReplica(gone, max_lag=5)
        down.record(in_recovery=True, lag=0.0)
        with read_your_writes():
            async with unit.factory(runtime.engine, replica=down, acquire_timeout=2)(read_only=True) as uow:
                assert not await uow.in_recovery()  # the primary
        assert down.state == "unavailable" and down.reason


def gone_url() -> str:
    """A PostgreSQL URL on a port where nothing listens."""
    return f"postgresql://postgres@127.0.0.1:{free_port()}/{DATABASE}"


def _check(workdir: Path, env: dict[str, str]) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "DB_", "PRODUCTOS_", "WORKERS"))}
    result = subprocess.run(
        [sys.executable, "-m", "productos", "check", "--json"],
        cwd=workdir, env={**base, **env, "DB_CONNECT_TIMEOUT": "1"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert SECRET not in result.stdout + result.stderr and quote(SECRET, safe="") not in result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    report["returncode"] = result.returncode
    return report


async def test_the_replica_stopped(migrated: Replication, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    read_url = migrated.replica.url(DATABASE).replace("postgres@", f"postgres:{quote(SECRET, safe='')}@")
    env = {
        "DATABASE_URL": migrated.primary.url(DATABASE),
        "DATABASE_READ_URL": read_url,
        # Within the small cluster's connections, which `check` holds the worst case to.
        "WORKERS": "1",
        "DB_POOL_SIZE": "2",
        "DB_MAX_OVERFLOW": "1",
    }
    report = await asyncio.to_thread(_check, tmp_path, env)
    assert report["returncode"] == 0, report
    step = next(step for step in report["checks"] if step["name"] == "replica")
    assert step["ok"] and "connected" in step["detail"], step
    row = next(row for row in report["settings"] if row["name"] == "DATABASE_READ_URL")
    assert "***" in row["value"], row

    async with serve(migrated.settings(database_read_url=read_url, db_read_max_lag=60)) as client:
        producto_id = await _create(client, "served anyway")
        await migrated.replayed()
        for _ in range(3):  # the replica's pool holds connections when it goes
            assert await _nombre(client, producto_id) == "served anyway"
        await migrated.replica.actl("stop")
        try:
            for _ in range(20):
                assert await _nombre(client, producto_id) == "served anyway"
                listing = await client.get("/productos")
                assert listing.status_code == 200, listing.text
            health = await _health(client)
            assert health["status"] == "healthy" and health["replica"] == "unavailable", health

            report = await asyncio.to_thread(_check, tmp_path, env)
            assert report["returncode"] == 1, report
            step = next(step for step in report["checks"] if step["name"] == "replica")
            assert not step["ok"] and "DATABASE_READ_URL" in step["hint"], step
        finally:
            await migrated.replica.actl("start")
        await until(lambda: _replica_is(client, "connected"), within=10)
        assert await _nombre(client, producto_id) == "served anyway"
    logged = "".join(capfd.readouterr())
    assert "the read replica is unavailable: reads go to the primary" in logged
    assert SECRET not in logged and quote(SECRET, safe="") not in logged


async def test_behind_transaction_mode_poolers(migrated: Replication) -> None:
    """``DB_POOLER=transaction`` applies to ``DATABASE_READ_URL`` too: PgBouncer in front of each server."""
    with (
        PgBouncer(migrated.primary.url(DATABASE), pool_size=2) as primary,
        PgBouncer(migrated.replica.url(DATABASE), pool_size=2) as replica,
    ):
        settings = migrated.settings(
            database_url=primary.url(DATABASE), database_read_url=replica.url(DATABASE), db_pooler="transaction"
        )
        async with serve(settings) as client:
            assert (await _health(client))["replica"] == "connected"
            producto_id = await _create(client, "pooled")
            await migrated.replayed()
            async with migrated.replay_paused():
                await migrated.on_primary("UPDATE productos SET nombre = 'primary only' WHERE id = $1", producto_id)
                assert await _nombre(client, producto_id) == "pooled"
                response = await client.post(f"/probe/rename/{producto_id}", params={"nombre": "pooled again"})
                assert response.json() == {"before": "pooled", "after": "pooled again"}, response.text
                assert (await _health(client))["replica"] == "connected"
            await migrated.replayed()
            assert await _nombre(client, producto_id) == "pooled again"


async def test_promotion(migrated: Replication) -> None:
    async with serve(migrated.settings(db_read_max_lag=60)) as client:
        producto_id = await _create(client, "before the promotion")
        await migrated.replayed()
        assert await migrated.on_replica("SELECT pg_promote()")
        assert not await migrated.on_replica("SELECT pg_is_in_recovery()")
        # The next sample finds a server out of recovery: still connected, still serving reads.
        await asyncio.sleep(1.5)
        health = await _health(client)
        assert health["status"] == "healthy" and health["replica"] == "connected", health
        for _ in range(10):
            assert await _nombre(client, producto_id) == "before the promotion"
        # Writes still go to DATABASE_URL; read-your-writes still reads them back from there.
        response = await client.post(f"/probe/rename/{producto_id}", params={"nombre": "after the promotion"})
        assert response.json() == {"before": "before the promotion", "after": "after the promotion"}, response.text
        assert await migrated.on_primary("SELECT nombre FROM productos WHERE id = $1", producto_id) == (
            "after the promotion"
        )
