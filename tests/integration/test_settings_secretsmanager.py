"""Settings from one Secrets Manager secret through aioboto3, against moto's server over HTTP."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from productos.infra.aws import AwsClients
from productos.infra.db.url import parse_database_url
from productos.runtime import open_settings, resolve_settings
from tests.integration.conftest import Aws

NASTY = "p@ss:w/o?r#d%25 x"  # every character a URL gives meaning to


async def test_json_keys_are_settings(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_secret(
        "productos/config",
        {"DATABASE_URL": "postgresql://app:pw-Sm1@db:5432/p", "log_level": "warning", "DB_POOL_SIZE": 6},
    )
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "productos/config")

    resolved = await resolve_settings()

    assert resolved.settings.database_url.get_secret_value() == "postgresql://app:pw-Sm1@db:5432/p"
    assert resolved.settings.log_level == "warning"
    assert resolved.settings.db_pool_size == 6  # a JSON number is fine
    assert resolved.sources["database_url"] == "secretsmanager:productos/config"
    assert resolved.sources["log_level"] == "secretsmanager:productos/config"


async def test_rds_secret_yields_database_url_with_the_password_escaped(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = aws.put_secret(
        "rds!db-1234",
        {
            "username": "app@corp",
            "password": NASTY,
            "engine": "postgres",
            "host": "mydb.abc123.us-east-1.rds.amazonaws.com",
            "port": 5432,
            "dbname": "productos",
            "dbInstanceIdentifier": "mydb",
        },
    )
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", arn)  # an ARN works as well as a name

    resolved = await resolve_settings()

    url = make_url(resolved.settings.database_url.get_secret_value())
    assert (url.username, url.password) == ("app@corp", NASTY)
    assert (url.host, url.port, url.database) == (
        "mydb.abc123.us-east-1.rds.amazonaws.com",
        5432,
        "productos",
    )
    assert parse_database_url(resolved.settings.database_url.get_secret_value()).url.password == NASTY
    assert resolved.sources["database_url"] == f"secretsmanager:{arn}"


async def test_credentials_only_secret_completes_the_url_from_ssm(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    # An RDS-managed master user secret holds username and password only.
    aws.put_secret("rds-master", {"username": "postgres", "password": NASTY})
    aws.put_parameters({"/productos-api/database-url": "postgresql://db.internal:5432/productos?sslmode=require"})
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", "/productos-api/")
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "rds-master")

    resolved = await resolve_settings()

    url = make_url(resolved.settings.database_url.get_secret_value())
    assert (url.username, url.password, url.host, url.database) == (
        "postgres",
        NASTY,
        "db.internal",
        "productos",
    )
    assert url.query == {"sslmode": "require"}
    assert resolved.sources["database_url"] == "secretsmanager:rds-master+ssm:/productos-api/database-url"


async def test_secret_wins_over_ssm_and_environment_wins_over_both(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_parameters({"/p/database-url": "postgresql://ssm@db/p"})
    aws.put_parameters({"/p/log-level": "debug", "/p/workers": "3", "/p/app-port": "8001"}, kind="String")
    aws.put_secret("s", {"DATABASE_URL": "postgresql://sm:pw@db/p", "LOG_LEVEL": "error", "APP_PORT": 8002})
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", "/p")
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "s")
    monkeypatch.setenv("APP_PORT", "8003")

    resolved = await resolve_settings()

    assert resolved.sources["database_url"] == "secretsmanager:s"
    assert (resolved.settings.log_level, resolved.sources["log_level"]) == ("error", "secretsmanager:s")
    assert (resolved.settings.workers, resolved.sources["workers"]) == (3, "ssm:/p/workers")
    assert (resolved.settings.app_port, resolved.sources["app_port"]) == (8003, "env")


async def test_start_up_reads_the_secret_once_and_the_path_once(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_parameters({f"/p/unused-{i}": "x" for i in range(15)}, kind="String")
    aws.put_secret("s", {"DATABASE_URL": "postgresql://sm:pw@db/p", "LOG_LEVEL": "error"})
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", "/p")
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "s")
    calls: list[str] = []

    def record(model: object, **_: object) -> None:
        calls.append(str(getattr(model, "name", "?")))

    async with AwsClients() as clients:
        for service in ("ssm", "secretsmanager"):
            (await clients.client(service)).meta.events.register(f"provide-client-params.{service}.*", record)
        async with open_settings(aws=clients) as resolved:
            assert resolved.secret is not None
            # The cached secret serves the database credentials: no second read.
            await resolved.secret.current()

    assert sorted(calls) == ["GetParametersByPath", "GetParametersByPath", "GetSecretValue"]
