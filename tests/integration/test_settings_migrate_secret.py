"""Two logins, two secrets: ``PRODUCTOS_SECRET_ID`` (the service's, row-only) yields ``DATABASE_URL`` and the
service's settings; ``PRODUCTOS_MIGRATE_SECRET_ID`` (the schema owner's, such as RDS's own master user secret)
yields ``DATABASE_MIGRATE_URL`` and nothing else. Against moto's server over HTTP; the last test migrates a
PostgreSQL that demands passwords, logging in with the owner's secret."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from productos.domain.errors import ConfigurationError
from productos.runtime import resolve_settings
from tests.integration.conftest import Aws, PasswordCluster

OWNER_PASSWORD = "0wner:p@ss/w%rd"
APP_PASSWORD = "app-pa55#word"


async def test_each_secret_completes_its_own_url_from_ssm(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deploy kit's layout: URLs without credentials in SSM, the logins in two secrets."""
    aws.put_parameters(
        {
            "/svc/database-url": "postgresql://proxy.internal:5432/productos?sslmode=require",
            "/svc/database-migrate-url": "postgresql://db.internal:5432/productos?sslmode=require",
            "/svc/db-pooler": "transaction",
        },
        kind="String",
    )
    aws.put_secret("svc/app", {"username": "productos_app", "password": APP_PASSWORD, "LOG_LEVEL": "warning"})
    # RDS's master user secret: its keys are RDS's; any other would be ignored, not taken for a setting.
    owner = aws.put_secret("rds!db-1", {"username": "productos", "password": OWNER_PASSWORD, "LOG_LEVEL": "debug"})
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", "/svc/")
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "svc/app")
    monkeypatch.setenv("PRODUCTOS_MIGRATE_SECRET_ID", owner)

    resolved = await resolve_settings(env_file=None)

    app = make_url(resolved.settings.database_url.get_secret_value())
    assert (app.username, app.password, app.host) == ("productos_app", APP_PASSWORD, "proxy.internal")
    assert resolved.settings.database_migrate_url is not None
    migrate = make_url(resolved.settings.database_migrate_url.get_secret_value())
    assert (migrate.username, migrate.password, migrate.host) == ("productos", OWNER_PASSWORD, "db.internal")
    assert migrate.query == {"sslmode": "require"}
    assert resolved.settings.db_pooler == "transaction"
    assert resolved.settings.log_level == "warning"  # the service's secret's, never the owner's
    assert resolved.sources["database_url"] == "secretsmanager:svc/app+ssm:/svc/database-url"
    assert resolved.sources["database_migrate_url"] == f"secretsmanager:{owner}+ssm:/svc/database-migrate-url"


async def test_a_whole_rds_secret_yields_the_migrate_url(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_secret("owner", {"username": "owner", "password": OWNER_PASSWORD, "host": "db.internal", "dbname": "p"})
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pw@db.internal:5432/p")
    monkeypatch.setenv("PRODUCTOS_MIGRATE_SECRET_ID", "owner")

    resolved = await resolve_settings(env_file=None)

    assert resolved.settings.database_migrate_url is not None
    migrate = make_url(resolved.settings.database_migrate_url.get_secret_value())
    assert (migrate.username, migrate.password, migrate.host, migrate.port, migrate.database) == (
        "owner",
        OWNER_PASSWORD,
        "db.internal",
        5432,
        "p",
    )
    assert resolved.sources["database_migrate_url"] == "secretsmanager:owner"
    assert resolved.sources["database_url"] == "env"


async def test_a_login_only_secret_with_no_url_to_complete_names_what_to_set(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.put_secret("owner", {"username": "owner", "password": OWNER_PASSWORD})
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pw@db.internal:5432/p")
    monkeypatch.setenv("PRODUCTOS_MIGRATE_SECRET_ID", "owner")

    with pytest.raises(ConfigurationError) as raised:
        await resolve_settings(env_file=None)

    message = str(raised.value)
    assert "PRODUCTOS_MIGRATE_SECRET_ID" in message and "DATABASE_MIGRATE_URL" in message
    assert "<path>/database-migrate-url" in message
    assert OWNER_PASSWORD not in message


async def test_a_missing_migrate_secret_names_its_setting(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pw@db.internal:5432/p")
    monkeypatch.setenv("PRODUCTOS_MIGRATE_SECRET_ID", "nowhere")

    with pytest.raises(ConfigurationError, match=r"nowhere \(PRODUCTOS_MIGRATE_SECRET_ID\) does not exist"):
        await resolve_settings(env_file=None)


async def test_productos_migrate_logs_in_with_the_owners_secret(
    aws: Aws, password_cluster: PasswordCluster, tmp_path: Path
) -> None:
    """The owner's password is only in its secret (and then rotated there and in the database): `productos migrate`
    logs in with it, and makes the service's login row-only."""
    suffix = os.urandom(4).hex()
    owner, app, database = f"owner_{suffix}", f"app_{suffix}", f"secrets_{suffix}"
    admin = await password_cluster.admin()
    try:
        literal = await admin.fetchval("SELECT quote_literal($1::text)", OWNER_PASSWORD)
        await admin.execute(f"CREATE ROLE {owner} LOGIN CREATEROLE PASSWORD {literal}")
        await admin.execute(f"CREATE DATABASE {database} OWNER {owner}")
        owner_secret = aws.put_secret(f"rds!{suffix}", {"username": owner, "password": OWNER_PASSWORD})
        aws.put_parameters(
            {f"/{suffix}/database-migrate-url": f"postgresql://127.0.0.1:{password_cluster.port}/{database}"},
            kind="String",
        )
        env = {
            **os.environ,
            "PRODUCTOS_SSM_PATH": f"/{suffix}/",
            "PRODUCTOS_MIGRATE_SECRET_ID": owner_secret,
            "DATABASE_URL": password_cluster.url(app, APP_PASSWORD, database),
        }

        def migrate() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "productos", "migrate"],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip

        done = await asyncio.to_thread(migrate)
        assert done.returncode == 0, done.stderr
        assert f"the service's login '{app}' (created, password set)" in done.stdout

        # A rotation: the database's password first, then the secret's, as RDS does it.
        rotated = "r0tated:" + OWNER_PASSWORD
        literal = await admin.fetchval("SELECT quote_literal($1::text)", rotated)
        await admin.execute(f"ALTER ROLE {owner} PASSWORD {literal}")
        aws.put_secret(f"rds!{suffix}", {"username": owner, "password": rotated})
        done = await asyncio.to_thread(migrate)
        assert done.returncode == 0, done.stderr
        assert OWNER_PASSWORD not in done.stdout + done.stderr and APP_PASSWORD not in done.stdout + done.stderr

        conn = await asyncpg.connect(password_cluster.url(app, APP_PASSWORD, database))
        try:
            assert await conn.fetchval("SELECT count(*) FROM productos") == 0
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        for role in (app, owner):
            await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()
