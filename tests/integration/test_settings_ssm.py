"""Settings from SSM Parameter Store through aioboto3, against moto's server over HTTP."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from productos.infra.aws import AwsClients, SsmParameterSource
from productos.runtime import load_settings, open_settings, resolve_settings
from tests.integration.conftest import Aws

PATH = "/productos-api/"
DB_URL = "postgresql://app:ssm-pass-Q7@db.internal:5432/productos?sslmode=require"


async def test_every_parameter_under_the_path_names_its_setting(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_parameters({"/productos-api/database-url": DB_URL})
    aws.put_parameters({"/productos-api/log-level": "debug", "/productos-api/db/db-pool-size": "4"}, kind="String")
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", PATH)

    resolved = await resolve_settings()

    settings = resolved.settings
    assert settings.database_url.get_secret_value() == DB_URL
    assert settings.log_level == "debug"
    assert settings.db_pool_size == 4  # nested: recursive, last segment names the setting
    assert resolved.sources["database_url"] == "ssm:/productos-api/database-url"
    assert resolved.sources["db_pool_size"] == "ssm:/productos-api/db/db-pool-size"
    assert resolved.sources["ssm_path"] == "env"
    assert resolved.sources["app_port"] == "default"


async def test_string_securestring_and_stringlist(aws: Aws) -> None:
    aws.put_parameters({"/svc/service-name": "orders"}, kind="String")
    aws.put_parameters({"/svc/database-url": DB_URL}, kind="SecureString")
    aws.put_parameters({"/svc/extra-hosts": "a.example,b.example"}, kind="StringList")
    async with AwsClients() as clients:
        values = await SsmParameterSource(await clients.client("ssm"), "/svc").load()
    assert values["SERVICE_NAME"].value == "orders"
    assert values["DATABASE_URL"].value == DB_URL  # decrypted
    assert values["EXTRA_HOSTS"].value == "a.example,b.example"  # as an environment variable would hold it
    assert values["EXTRA_HOSTS"].source == "ssm:/svc/extra-hosts"


async def test_one_paginated_sequence_reads_every_page(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_parameters({"/productos-api/database-url": DB_URL})
    aws.put_parameters({f"/productos-api/unused/param-{i:02d}": str(i) for i in range(24)}, kind="String")
    aws.put_parameters({"/productos-api/zz/workers": "5"}, kind="String")  # on the last page
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", PATH)
    calls: list[tuple[str, dict[str, object]]] = []

    def record(params: dict[str, object], model: object, **_: object) -> None:
        calls.append((getattr(model, "name", "?"), dict(params)))

    async with AwsClients() as clients:
        (await clients.client("ssm")).meta.events.register("provide-client-params.ssm.*", record)
        async with open_settings(aws=clients) as resolved:
            assert resolved.settings.workers == 5
            assert resolved.settings.database_url.get_secret_value() == DB_URL

    assert [name for name, _ in calls] == ["GetParametersByPath"] * 3  # 26 parameters, 10 per page
    first = calls[0][1]
    assert first["Path"] == "/productos-api" and first["Recursive"] is True and first["WithDecryption"] is True
    assert "NextToken" not in first and all("NextToken" in params for _, params in calls[1:])


async def test_precedence_dotenv_below_ssm_below_env_below_explicit(
    aws: Aws, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    aws.put_parameters({"/productos-api/database-url": DB_URL})
    aws.put_parameters(
        {
            "/productos-api/log-level": "error",
            "/productos-api/app-port": "8101",
            "/productos-api/workers": "2",
        },
        kind="String",
    )
    (tmp_path / ".env").write_text("LOG_LEVEL=debug\nAPP_PORT=8100\nWORKERS=1\nDB_POOL_SIZE=3\n")
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", PATH)
    monkeypatch.setenv("APP_PORT", "8102")

    resolved = await resolve_settings(workers=7)

    s, src = resolved.settings, resolved.sources
    assert (s.db_pool_size, src["db_pool_size"]) == (3, ".env")
    assert (s.log_level, src["log_level"]) == ("error", "ssm:/productos-api/log-level")
    assert (s.app_port, src["app_port"]) == (8102, "env")
    assert (s.workers, src["workers"]) == (7, "explicit")


async def test_the_path_may_come_from_dotenv(aws: Aws, tmp_path: Path) -> None:
    aws.put_parameters({"/productos-api/database-url": DB_URL})
    (tmp_path / ".env").write_text(f"PRODUCTOS_SSM_PATH={PATH}\n")
    settings = await load_settings()
    assert settings.database_url.get_secret_value() == DB_URL
    assert settings.ssm_path == PATH


async def test_parameters_cannot_redirect_the_sources_and_unknown_ones_are_reported(
    aws: Aws, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    aws.put_parameters({"/productos-api/database-url": DB_URL})
    aws.put_parameters(
        {"/productos-api/productos-secret-id": "other", "/productos-api/databse-url": "typo"}, kind="String"
    )
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", PATH)
    with caplog.at_level(logging.INFO, logger="productos.settings"):
        resolved = await resolve_settings()
    assert resolved.settings.secret_id is None
    assert resolved.sources["secret_id"] == "default"
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "PRODUCTOS_SECRET_ID" in messages and "ssm:/productos-api/databse-url" in messages
    assert "typo" not in messages
