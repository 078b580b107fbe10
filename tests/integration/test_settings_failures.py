"""Every way loading settings from AWS can fail stops start-up with a message that names the parameter or
secret, says what to fix, and holds no secret value. Against moto's server over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager

from productos.domain.errors import ConfigurationError
from productos.domain.settings_ports import SettingValue
from productos.runtime import open_runtime, resolve_settings
from productos.services.productos.app import MIGRATIONS, create_app
from tests.integration.conftest import Aws, free_port, moto_post

SECRET = "S3cr3t-never-print-9f2c"
DB_URL = f"postgresql://app:{SECRET}@db.internal:5432/productos"


async def failure(**overrides: object) -> str:
    with pytest.raises(ConfigurationError) as raised:
        await resolve_settings(**overrides)
    message = str(raised.value)
    print(f"\n{message}")  # `pytest -s` shows every message
    assert SECRET not in message
    return message


# --- missing ------------------------------------------------------------------------------------------------


async def test_missing_secret(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "productos/missing")
    message = await failure()
    assert "productos/missing" in message and "does not exist" in message and "PRODUCTOS_SECRET_ID" in message


async def test_path_without_parameters(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_parameters({"/other/database-url": DB_URL})
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", "/productos-api/")
    message = await failure()
    assert "no SSM parameters under /productos-api" in message
    assert "/productos-api/database-url" in message  # says what to create


async def test_missing_database_url_parameter(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_parameters({"/productos-api/log-level": "info"}, kind="String")
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", "/productos-api/")
    message = await failure()
    assert "DATABASE_URL was found in no source" in message
    assert "/productos-api/database-url" in message


async def test_credentials_only_secret_without_a_url_to_complete(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_secret("rds-master", {"username": "postgres", "password": SECRET})
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "rds-master")
    message = await failure()
    assert "rds-master" in message and "no host" in message


# --- access denied, bad credentials -------------------------------------------------------------------------


def restricted_user(aws: Aws, monkeypatch: pytest.MonkeyPatch, allow: list[str]) -> None:
    """Switch to an IAM user allowed ``allow`` only, with moto enforcing IAM from now on."""
    aws.iam.create_user(UserName="productos-instance")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": allow, "Resource": "*"}]}
    aws.iam.put_user_policy(UserName="productos-instance", PolicyName="p", PolicyDocument=json.dumps(policy))
    key = aws.iam.create_access_key(UserName="productos-instance")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    moto_post(aws.endpoint, "/moto-api/reset-auth", b"0")


async def test_access_denied_on_the_path(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_parameters({"/productos-api/database-url": DB_URL})
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", "/productos-api/")
    restricted_user(aws, monkeypatch, ["secretsmanager:GetSecretValue"])
    message = await failure()
    assert "/productos-api" in message and "PRODUCTOS_SSM_PATH" in message
    assert "AccessDenied" in message and "allow ssm:GetParametersByPath" in message


async def test_access_denied_on_the_secret(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_parameters({"/productos-api/database-url": DB_URL})
    aws.put_secret("productos/db", {"DATABASE_URL": DB_URL})
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", "/productos-api/")
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "productos/db")
    restricted_user(aws, monkeypatch, ["ssm:GetParametersByPath"])
    message = await failure()
    assert "productos/db" in message and "PRODUCTOS_SECRET_ID" in message
    assert "AccessDenied" in message and "allow secretsmanager:GetSecretValue" in message
    assert "/productos-api" not in message  # the path was readable


async def test_rejected_credentials(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_secret("productos/db", {"DATABASE_URL": DB_URL})
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "productos/db")
    moto_post(aws.endpoint, "/moto-api/reset-auth", b"0")  # "testing" is no IAM user's key
    message = await failure()
    assert "productos/db" in message and "AWS rejected the credentials" in message


async def test_no_credentials(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", "/productos-api/")
    message = await failure()
    assert "no AWS credentials" in message and "instance profile" in message


async def test_no_region(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "productos/db")
    message = await failure()
    assert "no AWS region" in message and "AWS_REGION" in message


async def test_region_from_aws_default_region(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_secret("productos/db", {"DATABASE_URL": DB_URL})
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "productos/db")
    resolved = await resolve_settings()
    assert (resolved.settings.aws_region, resolved.sources["aws_region"]) == ("us-east-1", "env")


# --- unreachable --------------------------------------------------------------------------------------------


async def test_unreachable_endpoint(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", "/productos-api/")
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "productos/db")
    monkeypatch.setenv("PRODUCTOS_AWS_MAX_ATTEMPTS", "2")
    started = time.perf_counter()
    message = await failure()
    assert time.perf_counter() - started < 10
    # Both sources fail and both are reported, each naming what it read.
    assert "SSM parameters under /productos-api" in message and "secret productos/db" in message
    assert "unreachable" in message and dead in message


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An endpoint that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


async def test_hung_endpoint_times_out(aws: Aws, monkeypatch: pytest.MonkeyPatch, black_hole: str) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", black_hole)
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "productos/db")
    monkeypatch.setenv("PRODUCTOS_AWS_READ_TIMEOUT", "0.5")
    monkeypatch.setenv("PRODUCTOS_AWS_MAX_ATTEMPTS", "1")
    started = time.perf_counter()
    message = await failure()
    assert time.perf_counter() - started < 5
    assert "secret productos/db" in message and "unreachable" in message and "ReadTimeout" in message


# --- malformed values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (f'{{"DATABASE_URL": "{DB_URL}", ', "is not valid JSON (error at line 1"),
        (f"password={SECRET}", "is not valid JSON"),
        (json.dumps([DB_URL]), "is JSON but not an object"),
    ],
)
async def test_malformed_secret(aws: Aws, monkeypatch: pytest.MonkeyPatch, stored: str, expected: str) -> None:
    aws.put_secret("productos/db", stored)
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "productos/db")
    message = await failure()
    assert "productos/db" in message and expected in message


async def test_binary_secret(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.secretsmanager.create_secret(Name="productos/bin", SecretBinary=SECRET.encode())
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "productos/bin")
    message = await failure()
    assert "productos/bin" in message and "SecretBinary" in message


async def test_rds_secret_of_another_engine(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_secret("rds-mysql", {"username": "u", "password": SECRET, "engine": "mysql", "host": "h", "port": 3306})
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "rds-mysql")
    message = await failure()
    assert "rds-mysql" in message and "'mysql' engine" in message and "PostgreSQL" in message


async def test_invalid_value_in_a_parameter(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_parameters({"/productos-api/database-url": DB_URL, "/productos-api/db-pool-size": SECRET})
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", "/productos-api/")
    message = await failure()
    assert "DB_POOL_SIZE (from ssm:/productos-api/db-pool-size)" in message


async def test_invalid_value_in_the_secret(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_secret("productos/db", {"DATABASE_URL": DB_URL, "LOG_LEVEL": SECRET, "APP_PORT": 0})
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "productos/db")
    message = await failure()
    assert "LOG_LEVEL (from secretsmanager:productos/db)" in message
    assert "APP_PORT (from secretsmanager:productos/db)" in message


async def test_invalid_database_url_in_a_parameter(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_parameters({"/productos-api/database-url": f"mysql://app:{SECRET}@db/p"})
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", "/productos-api/")
    message = await failure()
    assert "unsupported scheme 'mysql'" in message and "ssm:/productos-api/database-url" in message


async def test_two_parameters_name_one_setting(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_parameters({"/productos-api/a/database-url": DB_URL, "/productos-api/b/database-url": DB_URL})
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", "/productos-api/")
    message = await failure()
    assert "/productos-api/a/database-url and /productos-api/b/database-url" in message
    assert "DATABASE_URL" in message


async def test_path_must_be_absolute(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", "productos-api")
    message = await failure()
    assert "PRODUCTOS_SSM_PATH (from env)" in message and "must start with '/'" in message


async def test_iam_auth_needs_postgres(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_IAM_AUTH", "true")
    message = await failure()
    assert "DB_IAM_AUTH=true (from env)" in message and "PostgreSQL DATABASE_URL" in message


class BrokenSource:
    async def load(self) -> Mapping[str, SettingValue]:
        raise RuntimeError(SECRET)


async def test_a_failing_source_of_your_own(aws: Aws) -> None:
    with pytest.raises(ConfigurationError) as raised:
        await resolve_settings(sources=[BrokenSource()])
    assert "the settings source BrokenSource failed (RuntimeError)" in str(raised.value)
    assert SECRET not in str(raised.value)


# --- start-up and `productos check` stop -------------------------------------------------------------------


async def test_app_start_up_stops(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_secret("productos/db", f"DATABASE_URL={DB_URL}")
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "productos/db")
    with pytest.raises(ConfigurationError, match=r"productos/db.*not valid JSON"):
        async with open_runtime(migrations=[MIGRATIONS]):
            pass
    with pytest.raises(ConfigurationError, match=r"productos/db.*not valid JSON"):
        async with LifespanManager(create_app(), startup_timeout=60):
            pass


def test_productos_check_exits_non_zero_without_printing_the_secret(aws: Aws, tmp_path: Path) -> None:
    aws.put_secret("productos/db", {"DATABASE_URL": DB_URL, "APP_PORT": SECRET})
    env = {**os.environ, "PRODUCTOS_SECRET_ID": "productos/db"}
    result = subprocess.run(
        [sys.executable, "-m", "productos", "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "APP_PORT (from secretsmanager:productos/db)" in output
    assert SECRET not in output
