"""Rotation for real: a PostgreSQL that demands passwords, a moto secret, requests flowing while both change.

Also RDS IAM authentication: every new connection logs in with a fresh token for its host, port and user.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import event, text
from sqlalchemy.pool import Pool

from productos.infra.db.engine import create_engine
from productos.runtime import open_runtime, resolve_settings
from productos.services.productos.app import MIGRATIONS, create_app
from tests.integration.conftest import Aws, PasswordCluster, set_password

SECRET_ID = "productos/rds"
PASSWORDS = ["p@ss:w/o?r#d%-one", "second/pass@word?#%", "third:%40#?@/"]  # every URL-special character


def rds_secret(cluster: PasswordCluster, database: str, role: str, password: str) -> dict[str, Any]:
    return {
        "username": role,
        "password": password,
        "engine": "postgres",
        "host": "127.0.0.1",
        "port": cluster.port,
        "dbname": database,
    }


@pytest.fixture
def new_logins() -> Iterator[list[tuple[str, str]]]:
    """(user, password) of every new PostgreSQL connection any pool opens during the test."""
    seen: list[tuple[str, str]] = []

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        params = dbapi_connection._connection._params  # asyncpg's connection parameters
        seen.append((params.user, params.password))

    event.listen(Pool, "connect", on_connect)
    yield seen
    event.remove(Pool, "connect", on_connect)


@pytest.fixture
async def rds(
    aws: Aws,
    password_cluster: PasswordCluster,
    app_database: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[str, str]:
    """The app database behind a moto RDS-style secret; the service configured by PRODUCTOS_SECRET_ID only."""
    database, role = app_database
    await set_password(password_cluster, role, PASSWORDS[0])
    aws.put_secret(SECRET_ID, rds_secret(password_cluster, database, role, PASSWORDS[0]))
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", SECRET_ID)
    monkeypatch.setenv("PRODUCTOS_MIGRATE_ON_START", "true")
    # A small pool under more concurrent requests: overflow connections close and reopen all the time.
    monkeypatch.setenv("DB_POOL_SIZE", "2")
    monkeypatch.setenv("DB_MAX_OVERFLOW", "6")
    # A busy CI machine must not turn a slow checkout into a failed request: only rotation is under test.
    for name in ("DB_POOL_TIMEOUT", "DB_CONNECT_TIMEOUT", "DB_STATEMENT_TIMEOUT"):
        monkeypatch.setenv(name, "15")
    return database, role


async def rotate_like_the_rotation_function(
    aws: Aws, cluster: PasswordCluster, database: str, role: str, password: str
) -> None:
    """AWS single-user rotation: createSecret (AWSPENDING), setSecret (database), testSecret, finishSecret."""
    sm = aws.secretsmanager
    value = json.dumps(rds_secret(cluster, database, role, password))
    await asyncio.to_thread(sm.put_secret_value, SecretId=SECRET_ID, SecretString=value, VersionStages=["AWSPENDING"])
    await set_password(cluster, role, password)
    await asyncio.sleep(0.7)  # testSecret; requests keep coming, new connections meet the new password
    stages = (await asyncio.to_thread(sm.describe_secret, SecretId=SECRET_ID))["VersionIdsToStages"]
    pending = next(v for v, s in stages.items() if "AWSPENDING" in s and "AWSCURRENT" not in s)
    current = next(v for v, s in stages.items() if "AWSCURRENT" in s)
    await asyncio.to_thread(
        sm.update_secret_version_stage,
        SecretId=SECRET_ID,
        VersionStage="AWSCURRENT",
        MoveToVersionId=pending,
        RemoveFromVersionId=current,
    )
    # The rotation is over: AWSPENDING leaves the new version.
    await asyncio.to_thread(
        sm.update_secret_version_stage,
        SecretId=SECRET_ID,
        VersionStage="AWSPENDING",
        RemoveFromVersionId=pending,
    )


async def rotate_by_hand(aws: Aws, cluster: PasswordCluster, database: str, role: str, password: str) -> None:
    """A person updates the secret first, then the database a moment later."""
    value = json.dumps(rds_secret(cluster, database, role, password))
    await asyncio.to_thread(aws.secretsmanager.put_secret_value, SecretId=SECRET_ID, SecretString=value)
    await asyncio.sleep(0.7)
    await set_password(cluster, role, password)


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


@asynccontextmanager
async def traffic(client: httpx.AsyncClient, workers: int = 8) -> AsyncIterator[Counter[str]]:
    """Requests from ``workers`` concurrent clients until the block ends; counts outcomes."""
    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()

    async def worker(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                created = await client.post("/productos", json={"nombre": f"p{n}-{i}", "precio": 1.5})
                listed = await client.get("/productos")
            except Exception as exc:  # a failed request, whatever the cause
                outcomes[f"error {type(exc).__name__}: {str(exc)[:300]}"] += 1
                continue
            outcomes["ok" if created.status_code == 201 else f"POST {created.status_code}"] += 1
            outcomes["ok" if listed.status_code == 200 else f"GET {listed.status_code}"] += 1

    tasks = [asyncio.create_task(worker(n)) for n in range(workers)]
    try:
        yield outcomes
    finally:
        stop.set()
        await asyncio.gather(*tasks)


@pytest.mark.parametrize(
    ("rotate", "ttl"),
    [
        # AWSPENDING holds the new password while the database has it and AWSCURRENT does not yet.
        (rotate_like_the_rotation_function, "300"),
        # The cached secret works until the database changes; then the secret is read again.
        (rotate_by_hand, "300"),
        # The background refresh takes the new secret before the database has it: AWSPREVIOUS still works.
        (rotate_by_hand, "0.2"),
    ],
    ids=["rotation-function", "by-hand", "by-hand-short-ttl"],
)
async def test_rotation_while_requests_flow_fails_no_request(
    aws: Aws,
    password_cluster: PasswordCluster,
    rds: tuple[str, str],
    new_logins: list[tuple[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    rotate: Callable[..., Awaitable[None]],
    ttl: str,
) -> None:
    database, role = rds
    monkeypatch.setenv("PRODUCTOS_SECRET_TTL", ttl)
    # The pool keeps its connections; recycling them every second makes new logins happen while requests flow.
    monkeypatch.setenv("DB_POOL_RECYCLE", "1")
    app = create_app()
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://productos") as client,
        traffic(client) as outcomes,
    ):
        await until(lambda: outcomes["ok"] >= 8)
        before, ok_before = len(new_logins), outcomes["ok"]
        await rotate(aws, password_cluster, database, role, PASSWORDS[1])
        # Requests keep flowing until new connections have logged in with the new password, and a while after.
        await until(lambda: (role, PASSWORDS[1]) in new_logins[before:])
        await until(lambda: outcomes["ok"] >= ok_before + 16)

    failures = sum(n for outcome, n in outcomes.items() if outcome != "ok")
    print(f"\nrotation ({rotate.__name__}, ttl {ttl}): {dict(outcomes)}; new connections: {len(new_logins)}")
    assert failures == 0, dict(outcomes)
    assert ok_before > 0 and outcomes["ok"] > ok_before  # requests flowed before, during and after
    # New connections were opened after the rotation, with the new password.
    assert (role, PASSWORDS[1]) in new_logins[before:]


async def test_pooled_connections_keep_working_and_new_ones_use_the_new_password(
    aws: Aws, password_cluster: PasswordCluster, rds: tuple[str, str], new_logins: list[tuple[str, str]]
) -> None:
    database, role = rds
    async with open_runtime(migrations=[MIGRATIONS]) as container:
        engine = container.engine
        async with engine.connect() as held:  # opened before the rotation, kept across it
            assert await held.scalar(text("SELECT current_user")) == role
            await rotate_by_hand(aws, password_cluster, database, role, PASSWORDS[1])
            async with engine.connect() as fresh:  # the pool has no idle connection: a new login
                assert await fresh.scalar(text("SELECT 1")) == 1
            assert await held.scalar(text("SELECT 2")) == 2
        assert new_logins[-1] == (role, PASSWORDS[1])
        assert container.aws is not None
        assert set(container.aws.created) == {"secretsmanager"}  # loading and rotation share one client


async def test_secret_refreshes_in_the_background(
    aws: Aws, rds: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRODUCTOS_SECRET_TTL", "0.3")
    reads: list[float] = []
    async with open_runtime(migrations=[MIGRATIONS]) as container:
        assert container.aws is not None
        client = await container.aws.client("secretsmanager")
        client.meta.events.register(
            "provide-client-params.secrets-manager.GetSecretValue", lambda **_: reads.append(time.monotonic())
        )
        await asyncio.sleep(1.0)
    assert len(reads) >= 2  # about one read per TTL, with no connection asking


async def test_escaped_password_logs_in_for_real(
    aws: Aws, rds: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # DATABASE_URL built from the RDS secret, used as a plain URL (no credentials provider).
    settings = (await resolve_settings()).settings
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT current_user")) == rds[1]
    finally:
        await engine.dispose()


async def test_iam_auth_gives_every_new_connection_a_fresh_token(
    aws: Aws, monkeypatch: pytest.MonkeyPatch, new_logins: list[tuple[str, str]]
) -> None:
    # The main server trusts local logins and ignores the token: what we check is what the client sent.
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    monkeypatch.setenv("DB_IAM_AUTH", "true")
    async with open_runtime(migrations=[MIGRATIONS]) as container:
        engine = container.engine
        for _ in range(3):
            async with engine.connect() as conn:
                assert await conn.scalar(text("SELECT 1")) == 1
            await engine.dispose()  # the next connect is a new connection
        assert container.aws is not None and container.aws.created == ("rds",)

    assert len(new_logins) == 3
    for user, token in new_logins:
        assert user == "postgres"
        parts = urlsplit(f"https://{token}")
        query = parse_qs(parts.query)
        assert (parts.hostname, parts.port) == ("127.0.0.1", 5432)
        assert query["Action"] == ["connect"] and query["DBUser"] == ["postgres"]
        assert query["X-Amz-Credential"][0].split("/")[2:4] == ["us-east-1", "rds-db"]
        assert query["X-Amz-Expires"] == ["900"] and "X-Amz-Signature" in query
