"""Secret rotation through PgBouncer: requests flow while a moto secret and the database's password change.

The production shape: ``DATABASE_URL`` points at the pooler (``DB_POOLER=transaction``) and the Secrets Manager
secret is the database's own (its host is the server's; only its login is used). PgBouncer checks passwords
against the server's current ones (``auth_query`` as a dedicated ``auth_user``, SCRAM) and logs in to the server
with the client's SCRAM keys, so a rotated password reaches it without a reload. It refuses a stale password
with SQLSTATE 08P01 ("SASL authentication failed"), not 28P01: productos must take that for a refused login too,
and read the secret again.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from asgi_lifespan import LifespanManager

from productos.services.productos.app import create_app
from productos.testing import PgBouncer
from tests.integration.conftest import Aws, PasswordCluster, set_password
from tests.integration.test_settings_rotation import (  # noqa: F401 - new_logins is a fixture
    PASSWORDS,
    SECRET_ID,
    new_logins,
    rds_secret,
    rotate_by_hand,
    rotate_like_the_rotation_function,
    traffic,
    until,
)

pytestmark = pytest.mark.postgres

AUTH_QUERY = "SELECT usename, passwd FROM pg_shadow WHERE usename = $1"


@pytest.fixture
async def bouncer(password_cluster: PasswordCluster) -> AsyncIterator[PgBouncer]:
    """PgBouncer in front of the password cluster: SCRAM for clients, passwords looked up on the server."""
    auth_user, auth_password = f"pgbouncer_{os.urandom(4).hex()}", os.urandom(12).hex()
    admin = await password_cluster.admin()
    try:
        await admin.execute(f"CREATE ROLE {auth_user} LOGIN SUPERUSER PASSWORD '{auth_password}'")
        with PgBouncer(
            f"postgresql://{auth_user}@127.0.0.1:{password_cluster.port}/postgres",
            auth_type="scram-sha-256",
            users={auth_user: auth_password},
            settings={"auth_query": AUTH_QUERY},
            database_options={"auth_user": auth_user},
        ) as bouncer:
            yield bouncer
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {auth_user}")
        await admin.close()


@pytest.fixture
async def pooled_rds(
    aws: Aws,
    password_cluster: PasswordCluster,
    app_database: tuple[str, str],
    bouncer: PgBouncer,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[str, str]:
    database, role = app_database
    await set_password(password_cluster, role, PASSWORDS[0])
    aws.put_secret(SECRET_ID, rds_secret(password_cluster, database, role, PASSWORDS[0]))
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", SECRET_ID)
    monkeypatch.setenv("DATABASE_URL", bouncer.url(database, role, PASSWORDS[0]))
    monkeypatch.setenv("DB_POOLER", "transaction")
    # Through PgBouncer, with the service's login: DATABASE_MIGRATE_URL is not set.
    monkeypatch.setenv("PRODUCTOS_MIGRATE_ON_START", "true")
    monkeypatch.setenv("DB_POOL_SIZE", "2")
    monkeypatch.setenv("DB_MAX_OVERFLOW", "6")
    for name in ("DB_POOL_TIMEOUT", "DB_CONNECT_TIMEOUT", "DB_STATEMENT_TIMEOUT"):
        monkeypatch.setenv(name, "15")
    return database, role


@pytest.mark.parametrize(
    ("rotate", "ttl"),
    [(rotate_like_the_rotation_function, "300"), (rotate_by_hand, "300")],
    ids=["rotation-function", "by-hand"],
)
async def test_rotation_through_pgbouncer_fails_no_request(
    aws: Aws,
    password_cluster: PasswordCluster,
    pooled_rds: tuple[str, str],
    new_logins: list[tuple[str, str]],  # noqa: F811 - the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
    rotate: Callable[..., Awaitable[None]],
    ttl: str,
) -> None:
    database, role = pooled_rds
    monkeypatch.setenv("PRODUCTOS_SECRET_TTL", ttl)
    monkeypatch.setenv("DB_POOL_RECYCLE", "1")  # new logins to PgBouncer all the time
    app = create_app()
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://productos") as client,
        traffic(client) as outcomes,
    ):
        await until(lambda: outcomes["ok"] >= 8)
        before, ok_before = len(new_logins), outcomes["ok"]
        await rotate(aws, password_cluster, database, role, PASSWORDS[1])
        await until(lambda: (role, PASSWORDS[1]) in new_logins[before:])
        await until(lambda: outcomes["ok"] >= ok_before + 16)

    failures = sum(n for outcome, n in outcomes.items() if outcome != "ok")
    print(f"\nrotation through PgBouncer ({rotate.__name__}): {dict(outcomes)}; new connections: {len(new_logins)}")
    assert failures == 0, dict(outcomes)
    assert ok_before > 0 and outcomes["ok"] > ok_before
    assert (role, PASSWORDS[1]) in new_logins[before:]
