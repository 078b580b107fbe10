"""The products service under gunicorn behind a real PgBouncer (transaction pooling, Debian's package), with
``DB_POOLER=transaction``: CRUD, ``/health``, 64 concurrent clients without an error, and a PostgreSQL restart
behind PgBouncer, after which the service recovers without a restart of its own.

PostgreSQL is a throwaway cluster of the module's own (it gets restarted); migrations go to it directly, through
``DATABASE_MIGRATE_URL``, as ``productos migrate`` runs them in a deploy.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from productos.testing import PgBouncer
from tests.integration.crud_load import CrudLoad
from tests.integration.servers import Gunicorn
from tests.integration.throwaway_cluster import ThrowawayCluster, throwaway_cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DATABASE = "behind_pgbouncer"
#: PostgreSQL connections PgBouncer opens (for the database and user): far fewer than the service's own.
SERVER_CONNECTIONS = 4


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayCluster]:
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def bouncer(cluster: ThrowawayCluster) -> Iterator[PgBouncer]:
    # server_login_retry: after a failed server login PgBouncer waits this long before the next (15 s by
    # default); short here so that the restart test does not wait on PgBouncer's back-off.
    with PgBouncer(cluster.url("postgres"), pool_size=SERVER_CONNECTIONS, settings={"server_login_retry": 1}) as b:
        yield b


@pytest.fixture(scope="module")
def server(cluster: ThrowawayCluster, bouncer: PgBouncer, workdir: Path) -> Iterator[Gunicorn]:
    subprocess.run(["createdb", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", DATABASE], check=True)
    env = {
        "DATABASE_URL": bouncer.url(DATABASE),
        "DB_POOLER": "transaction",
        "DATABASE_MIGRATE_URL": cluster.url(DATABASE),
        "DB_POOL_SIZE": "4",
        "DB_MAX_OVERFLOW": "12",
        "LOG_LEVEL": "warning",
    }
    subprocess.run(
        [sys.executable, "-m", "productos", "migrate"],
        cwd=workdir, env={**os.environ, **env}, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with Gunicorn(workdir, env) as server:
        yield server


async def test_crud_and_health(server: Gunicorn) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        created = await client.post("/productos", json={"nombre": "Mesa", "precio": 19.99, "stock": 2})
        assert created.status_code == 201, created.text
        producto = created.json()
        fetched = await client.get(f"/productos/{producto['id']}")
        assert fetched.status_code == 200 and fetched.json() == producto
        listed = await client.get("/productos")
        assert listed.status_code == 200 and producto["id"] in [p["id"] for p in listed.json()]
        updated = await client.put(f"/productos/{producto['id']}", json={"nombre": "Mesa", "precio": 21, "stock": 3})
        assert updated.status_code == 200 and updated.json()["version"] == producto["version"] + 1
        assert (await client.delete(f"/productos/{producto['id']}")).status_code == 204
        assert (await client.get(f"/productos/{producto['id']}")).status_code == 404
        health = await client.get("/health")
        assert health.status_code == 200, health.text
        assert health.json() == {"status": "healthy", "service": "productos-api", "database": "connected"}
    assert "Traceback" not in server.output()


async def test_64_concurrent_clients_get_no_error(cluster: ThrowawayCluster, server: Gunicorn) -> None:
    load = CrudLoad(server.base_url, clients=64)
    await load.start()
    deadline = time.monotonic() + 60
    most_backends = 0
    admin = await cluster.admin()
    try:
        while len(load.outcomes) < 64 * 8 and time.monotonic() < deadline:
            backends = await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", DATABASE)
            most_backends = max(most_backends, backends)
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
        await load.stop()
    statuses = Counter(o.status for o in load.outcomes)
    print(f"64 clients through PgBouncer: {load.summary()}; at most {most_backends} PostgreSQL backends")
    assert len(load.outcomes) >= 64 * 8, load.summary()
    assert set(statuses) == {200}, load.summary()
    assert not [o for o in load.outcomes if o.closed], load.summary()
    # 2 workers with up to 16 connections each to PgBouncer; PgBouncer's few to PostgreSQL carry them all.
    assert 1 <= most_backends <= SERVER_CONNECTIONS
    assert "Traceback" not in server.output()


async def test_postgres_restart_behind_pgbouncer(cluster: ThrowawayCluster, server: Gunicorn) -> None:
    load = CrudLoad(server.base_url)
    await load.start()
    await load.settle(time.monotonic(), within=10)
    started = asyncio.create_task(cluster.next_start(DATABASE))
    await cluster.actl("restart")  # in-flight statements cancelled, backends sent 57P01, PgBouncer's logins fail
    accepted = await started
    await load.settle(accepted, within=30)
    await load.stop()

    last_failure = load.last_failure()
    recovery = 0.0 if last_failure is None else last_failure - accepted
    print(f"restart behind PgBouncer: {load.summary()}; back {recovery:.2f} s after PostgreSQL accepted connections")
    # Only 200 or 503 with Retry-After meanwhile: never a 500, never a reset connection.
    assert load.errors() == [], load.summary()
    assert load.bad_503s() == [], load.summary()
    # Recovered, without a restart of the service: the last requests, well after the restart, all succeeded.
    latest = sorted(load.outcomes, key=lambda o: o.started)[-2 * load.clients :]
    assert all(o.status == 200 for o in latest), load.summary()
    assert load.succeeded_after(accepted) >= 2 * load.clients
    assert "Traceback" not in server.output()
