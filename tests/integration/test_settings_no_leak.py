"""No secret value appears in anything a run prints: a gunicorn service configured from SSM and Secrets
Manager at debug level, serving requests; ``productos check``; and runs that fail on a bad secret, a bad
value, a refused login. Every byte of their stdout and stderr, and every response body, is searched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from tests.integration.conftest import Aws, PasswordCluster
from tests.integration.servers import Gunicorn

SSM_SECRET = "ssmPw7f3a9c1e"
SM_SECRET = "smPw-2b8d@4e:6f/?#%"
OTHER_SECRET = "apiKey5c0ffee1d"
WRONG_SECRET = "wrongPw9e8d7c6b"
SECRETS = [SSM_SECRET, SM_SECRET, OTHER_SECRET, WRONG_SECRET]
ADMIN_URL = os.environ.get("DATABASE_URL_TEST", "postgresql://postgres@127.0.0.1:5432/test")


def assert_no_secret(output: str) -> None:
    for secret in SECRETS:
        for form in {secret, quote(secret, safe=""), quote(secret), json.dumps(secret)[1:-1]}:
            assert form not in output, f"a secret value appears in the output:\n{output}"


@pytest.fixture
async def scratch_database() -> AsyncIterator[str]:
    """A database on the main (trusting) server: the secret passwords are sent and ignored."""
    name = f"productos_leak_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def keep(bodies: list[str]) -> dict[str, list[Callable[[httpx.Response], Awaitable[None]]]]:
    """httpx event hooks that keep every response body, to be searched too."""

    async def on_response(response: httpx.Response) -> None:
        bodies.append((await response.aread()).decode(errors="replace"))

    return {"response": [on_response]}


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "LOG_LEVEL": "debug", "PRODUCTOS_MIGRATE_ON_START": "true", **extra}


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=90)


async def test_a_served_run_prints_no_secret(aws: Aws, scratch_database: str, tmp_path: Path) -> None:
    aws.put_parameters(
        {"/productos-api/database-url": f"postgresql://postgres:{SSM_SECRET}@127.0.0.1:5432/{scratch_database}"}
    )
    aws.put_parameters({"/productos-api/log-level": "debug"}, kind="String")
    # RDS-managed style: the secret's credentials complete the URL from SSM; one more key names no setting.
    aws.put_secret("productos/db", {"username": "postgres", "password": SM_SECRET, "api_key": OTHER_SECRET})
    env = environment(PRODUCTOS_SSM_PATH="/productos-api/", PRODUCTOS_SECRET_ID="productos/db")

    bodies: list[str] = []
    with Gunicorn(tmp_path, env, workers=1) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10, event_hooks=keep(bodies)) as client:
            assert (await client.get("/health")).status_code == 200
            created = await client.post("/productos", json={"nombre": "lámpara", "precio": 12.5})
            assert created.status_code == 201
            assert (await client.get("/productos")).status_code == 200
            assert (await client.get("/productos/999999")).status_code == 404
            assert (await client.post("/productos", json={"nombre": ""})).status_code == 422
            assert (await client.get("/metrics")).status_code == 200
            assert (await client.get("/")).status_code == 200
        server.stop(40)
    served = server.output() + "\n".join(bodies)
    assert '"message":"settings loaded"' in served  # debug logging was on: there was output to search
    assert "API_KEY" in served  # the unknown key is named, its value is not

    check = run([sys.executable, "-m", "productos", "check"], tmp_path, env)
    assert "ssm:/productos-api/database-url" in check.stdout + check.stderr

    assert_no_secret(served + check.stdout + check.stderr)


@pytest.mark.parametrize(
    ("secret", "runs"),
    [
        # Malformed JSON: the service (its worker fails to boot, gunicorn exits), a program of your own (an
        # uncaught error: Python prints the whole traceback), and `productos check`.
        (f'{{"username": "postgres", "password": "{SM_SECRET}"', ("gunicorn", "program", "check")),
        # A value that fails validation, an unsupported URL: `productos check`.
        (
            json.dumps({"DATABASE_URL": f"postgresql://u:{SM_SECRET}@db/p", "APP_PORT": OTHER_SECRET}),
            ("check",),
        ),
        (json.dumps({"DATABASE_URL": f"mysql://u:{SM_SECRET}@db/p"}), ("check",)),
    ],
    ids=["malformed-json", "invalid-value", "invalid-url"],
)
def test_failed_runs_print_no_secret(aws: Aws, tmp_path: Path, secret: str, runs: tuple[str, ...]) -> None:
    aws.put_secret("productos/db", secret)
    env = environment(PRODUCTOS_SECRET_ID="productos/db")
    script = "import asyncio\nfrom productos.runtime import open_runtime\n"
    script += "from productos.services.productos.app import MIGRATIONS\n"
    script += (
        "async def main():\n    async with open_runtime(migrations=[MIGRATIONS]):\n        pass\nasyncio.run(main())\n"
    )
    # All in the service's environment (its APP_PORT, WORKERS...), started at once, the service first.
    server = Gunicorn(tmp_path, env, workers=1)
    if "gunicorn" in runs:
        server.start()
    commands = {
        "program": [sys.executable, "-c", script],
        "check": [sys.executable, "-m", "productos", "check"],
    }
    processes = {
        name: subprocess.Popen(
            command, cwd=tmp_path, env=server.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for name, command in commands.items()
        if name in runs
    }
    outputs = {}
    try:
        if "gunicorn" in runs:
            status = server.wait(90)
            outputs["gunicorn"] = server.output()
            assert status != 0, f"gunicorn succeeded:\n{outputs['gunicorn']}"
        for name, process in processes.items():
            outputs[name] = process.communicate(timeout=90)[0]
            assert process.returncode != 0, f"{name} succeeded:\n{outputs[name]}"
    finally:
        server.kill()
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
    assert "program" not in outputs or "ConfigurationError" in outputs["program"]
    assert all("productos/db" in output for output in outputs.values())
    assert_no_secret("\n".join(outputs.values()))


async def test_a_refused_login_prints_no_secret(aws: Aws, password_cluster: PasswordCluster, tmp_path: Path) -> None:
    aws.put_secret(
        "productos/db",
        {
            "username": "postgres",
            "password": WRONG_SECRET,
            "host": "127.0.0.1",
            "port": password_cluster.port,
            "dbname": "postgres",
        },
    )
    env = environment(PRODUCTOS_SECRET_ID="productos/db", PRODUCTOS_MIGRATE_ON_START="false")
    bodies: list[str] = []
    with Gunicorn(tmp_path, env, workers=1) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10, event_hooks=keep(bodies)) as client:
            # The login is refused: unhealthy. (503 is the contract; today a refused login, a plain
            # DBAPIError, is not mapped to "database unavailable": it may be a 500 or a dropped connection.)
            statuses = []
            for path in ("/health", "/productos"):
                try:
                    statuses.append((await client.get(path)).status_code)
                except httpx.TransportError:
                    statuses.append(0)
            assert 200 not in statuses
        server.stop(40)
    check = run([sys.executable, "-m", "productos", "check"], tmp_path, env)
    assert check.returncode != 0
    text = server.output() + check.stdout + check.stderr + "\n".join(bodies)
    assert "password authentication failed" in text
    assert_no_secret(text)
