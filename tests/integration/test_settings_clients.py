"""AWS clients: one session and one client per service, opened in the lifespan and closed on shutdown; the
standard endpoint, region, timeouts and retry mode; and how long loading takes against moto."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aioboto3
import pytest

from productos.domain.errors import ConfigurationError
from productos.infra.aws import AwsClients, AwsConfig
from productos.runtime import open_runtime, resolve_settings
from productos.services.productos.app import MIGRATIONS
from productos.settings import Settings
from tests.integration.conftest import Aws

DB_URL = "postgresql://app:pw-clients-1@db.internal:5432/productos"


async def test_one_session_and_one_client_per_service(aws: Aws) -> None:
    session = aioboto3.Session()
    async with AwsClients(session=session) as clients:
        first = await clients.client("ssm")
        together = await asyncio.gather(*(clients.client("secretsmanager") for _ in range(5)))
        assert await clients.client("ssm") is first
        assert all(client is together[0] for client in together)
        assert clients.created == ("ssm", "secretsmanager")
        assert clients._session is session
    with pytest.raises(ConfigurationError, match="closed"):
        await clients.client("ssm")


async def test_endpoint_region_timeouts_and_retries(aws: Aws) -> None:
    async with AwsClients() as clients:
        client = await clients.client("secretsmanager")
        # Never passed by productos: botocore read AWS_ENDPOINT_URL itself.
        assert client.meta.endpoint_url == aws.endpoint
        assert client.meta.region_name == "us-east-1"
        config = client.meta.config
        assert (config.connect_timeout, config.read_timeout) == (2.0, 5.0)
        assert config.retries == {"mode": "standard", "total_max_attempts": 3}


async def test_settings_tune_the_clients(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("PRODUCTOS_AWS_CONNECT_TIMEOUT", "1.5")
    monkeypatch.setenv("PRODUCTOS_AWS_READ_TIMEOUT", "4")
    monkeypatch.setenv("PRODUCTOS_AWS_MAX_ATTEMPTS", "5")
    settings = (await resolve_settings()).settings
    assert AwsConfig.from_settings(settings) == AwsConfig("eu-west-1", 1.5, 4.0, 5)
    async with AwsClients.from_settings(settings) as clients:
        client = await clients.client("ssm")
        assert client.meta.region_name == "eu-west-1"
        assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 5}


async def test_the_container_owns_the_clients_from_start_to_shutdown(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_parameters({"/productos-api/database-url": "sqlite+aiosqlite:///:memory:"})
    aws.put_secret("productos/config", {"LOG_LEVEL": "warning"})
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", "/productos-api/")
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "productos/config")
    async with open_runtime(migrations=[MIGRATIONS]) as container:
        clients = container.aws
        assert clients is not None
        # The clients that loaded the settings are the container's, open until shutdown.
        assert clients.created == ("ssm", "secretsmanager")
        assert container.settings.log_level == "warning"
        assert container.sources["database_url"] == "ssm:/productos-api/database-url"
        ssm = await clients.client("ssm")
        await ssm.describe_parameters()
    with pytest.raises(ConfigurationError, match="closed"):
        await clients.client("ssm")


def test_no_aws_configuration_imports_no_aws_sdk(tmp_path: Path) -> None:
    script = (
        "import asyncio, sys\n"
        "from productos.runtime import open_runtime\nfrom productos.services.productos.app import MIGRATIONS\n"
        "async def main():\n"
        "    async with open_runtime(migrations=[MIGRATIONS]) as container:\n"
        "        assert container.aws is not None and container.aws.created == ()\n"
        "asyncio.run(main())\n"
        "sdk = {'aioboto3', 'aiobotocore', 'botocore'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in sdk))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PRODUCTOS_", "DATABASE_URL"))}
    env["DATABASE_URL"] = "sqlite+aiosqlite:///:memory:"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- start-up time ---------------------------------------------------------------------------------------


def seed_for_timing(aws: Aws) -> None:
    aws.put_parameters({"/productos-api/database-url": DB_URL})
    aws.put_parameters({f"/productos-api/extra/param-{i:02d}": "x" for i in range(19)}, kind="String")
    aws.put_secret("productos/config", {"LOG_LEVEL": "warning", "DB_POOL_SIZE": 5})


async def test_start_up_time_against_moto(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process (SDK imported, service models cached): 20 parameters on 2 pages and one secret."""
    seed_for_timing(aws)
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", "/productos-api/")
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "productos/config")
    await resolve_settings()  # warm moto's backends
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        resolved = await resolve_settings()
        timings.append(time.perf_counter() - started)
    assert resolved.settings.db_pool_size == 5
    print(f"\nresolve_settings against moto, warm: median {sorted(timings)[2] * 1000:.0f} ms")
    # A guard against pathological regressions on a shared CI machine, not a benchmark.
    assert sorted(timings)[2] < 10.0


def test_cold_start_up_time_against_moto(aws: Aws, tmp_path: Path) -> None:
    """A new process: imports, session, two clients, the reads, validation."""
    seed_for_timing(aws)
    script = (
        "import time; t0 = time.perf_counter()\n"
        "import asyncio\n"
        "from productos.settings import resolve_settings\n"
        "t1 = time.perf_counter()\n"
        "resolved = asyncio.run(resolve_settings())\n"
        "t2 = time.perf_counter()\n"
        "assert resolved.settings.db_pool_size == 5\n"
        "print(f'{(t1 - t0) * 1000:.0f} {(t2 - t1) * 1000:.0f}')\n"
    )
    env = {**os.environ, "PRODUCTOS_SSM_PATH": "/productos-api/", "PRODUCTOS_SECRET_ID": "productos/config"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    import_ms, load_ms = (float(x) for x in result.stdout.split())
    print(f"\ncold process: import productos.settings {import_ms:.0f} ms, resolve_settings {load_ms:.0f} ms")
    assert load_ms < 20_000
    assert isinstance(Settings, type)
