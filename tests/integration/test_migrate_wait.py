"""``productos migrate --wait SECONDS``: a database still coming up is waited for, with a growing pause; one
that never comes fails after SECONDS, and a refused login or a missing database fails at once. What
deploy/productos.service runs before the service starts (``ExecStartPre``), in place of a ``-`` that ignored
every failure."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.integration.tcp_proxy import ControllableProxy

pytestmark = [pytest.mark.postgres]


def start_migrate(cwd: Path, database_url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "productos", "migrate", *args],
        cwd=cwd,
        env={**os.environ, "DATABASE_URL": database_url, "DATABASE_MIGRATE_URL": ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def through(proxy: ControllableProxy, database_url: str) -> str:
    return make_url(database_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


async def test_a_database_that_comes_up_is_waited_for(database_url: str, tmp_path: Path) -> None:
    upstream = make_url(database_url)
    with ControllableProxy(upstream.host or "127.0.0.1", upstream.port or 5432) as proxy:
        started = time.monotonic()
        migrating = start_migrate(tmp_path, through(proxy, database_url), "--wait", "60")
        await asyncio.sleep(3)
        assert migrating.poll() is None, migrating.communicate()
        proxy.set_mode("forward")
        out, err = await asyncio.to_thread(migrating.communicate, timeout=60)
    assert migrating.returncode == 0, err
    assert time.monotonic() - started >= 3
    assert "database upgraded to head" in out
    # Each failed attempt says why and when the next comes, without the host or the login.
    retries = [line for line in err.splitlines() if line.startswith("the database is not reachable yet")]
    assert retries and "ConnectionRefusedError" in retries[0] and "trying again in 0.5 s" in retries[0]
    assert str(proxy.port) not in err and "postgres@" not in err


async def test_a_database_that_stays_down_fails_after_the_wait(database_url: str, tmp_path: Path) -> None:
    upstream = make_url(database_url)
    with ControllableProxy(upstream.host or "127.0.0.1", upstream.port or 5432) as proxy:
        started = time.monotonic()
        migrating = start_migrate(tmp_path, through(proxy, database_url), "--wait", "3")
        out, err = await asyncio.to_thread(migrating.communicate, timeout=60)
        took = time.monotonic() - started
    assert migrating.returncode == 1, out + err
    assert 3 <= took < 30
    assert "cannot reach the database (ConnectionRefusedError)" in err
    assert "database upgraded" not in out


async def test_a_missing_database_is_not_waited_for(database_url: str, tmp_path: Path) -> None:
    missing = make_url(database_url).set(database="productos_no_such_database").render_as_string(hide_password=False)
    started = time.monotonic()
    migrating = start_migrate(tmp_path, missing, "--wait", "120")
    out, err = await asyncio.to_thread(migrating.communicate, timeout=60)
    assert migrating.returncode == 1, out + err
    assert time.monotonic() - started < 30
    assert "InvalidCatalogNameError 3D000" in err and "not reachable yet" not in err


@pytest.mark.parametrize("value", ["-1", "3601", "soon"])
def test_wait_takes_0_to_3600_seconds(value: str, tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "productos", "migrate", "--wait", value],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "--wait" in refused.stderr
