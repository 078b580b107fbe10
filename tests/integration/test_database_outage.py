"""The service under gunicorn boots without its database, answers 503 fast while the database is down or hung,
and recovers by itself when it comes back. A TCP proxy in front of PostgreSQL plays the failing network."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.servers import Gunicorn
from tests.integration.tcp_proxy import ControllableProxy

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

#: The ALB's health check times out after 5 s; every answer must come sooner.
ALB_TIMEOUT = 5.0
#: The bounds the default settings promise (PRODUCTOS_HEALTH_TIMEOUT; DB_POOL_TIMEOUT and DB_STATEMENT_TIMEOUT),
#: and scheduling slack.
HEALTH_BOUND = 2.0
REQUEST_BOUND = 5.0
SLACK = 0.5


def _timed_get(client: httpx.Client, path: str) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - start


def _wait_for(client: httpx.Client, path: str, status: int, within: float) -> None:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = client.get(path).status_code
        if last == status:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} still answers {last}, not {status}, after {within} s")


def test_boot_without_database_then_down_hang_and_recover(workdir: Path, database_url: str) -> None:
    parts = urlsplit(database_url)
    with ControllableProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        proxied = database_url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
        env = {"DATABASE_URL": proxied.replace("postgresql://postgres@", "postgresql://postgres:s3cr3t-pw@")}
        # The database is unreachable while the instance boots: gunicorn and both workers must stay up.
        with Gunicorn(workdir, env) as server, httpx.Client(base_url=server.base_url, timeout=10) as client:
            for _ in range(4):
                response, elapsed = _timed_get(client, "/health")
                assert response.status_code == 503 and elapsed < ALB_TIMEOUT
                assert response.json()["status"] == "unhealthy"
                for leak in (str(proxy.port), "127.0.0.1", "s3cr3t", "postgres"):
                    assert leak not in response.text and leak not in str(response.headers)
                response, elapsed = _timed_get(client, "/productos/1")
                assert response.status_code == 503 and elapsed < ALB_TIMEOUT
                assert response.json() == {"detail": "database unavailable"}
                assert client.get("/health/live").status_code == 200

            proxy.set_mode("forward")  # RDS becomes reachable: no restart needed
            _wait_for(client, "/health", 200, within=10)
            created = client.post("/productos", json={"nombre": "vuelve", "precio": 3})
            assert created.status_code == 201
            item = f"/productos/{created.json()['id']}"
            for _ in range(10):  # warm both workers' pools
                assert client.get(item).status_code == 200

            proxy.set_mode("hang")  # the database freezes: connections stay open, nothing answers
            for path in ("/health", item, "/health", item):
                response, elapsed = _timed_get(client, path)
                assert response.status_code == 503, (path, response.text)
                bound = HEALTH_BOUND if path == "/health" else REQUEST_BOUND
                assert elapsed <= bound + SLACK, (path, elapsed)

            proxy.set_mode("down")  # the database is killed: connections reset
            for path in ("/health", item):
                response, elapsed = _timed_get(client, path)
                assert response.status_code == 503 and elapsed < ALB_TIMEOUT

            proxy.set_mode("forward")
            _wait_for(client, "/health", 200, within=10)
            for _ in range(10):
                assert client.get(item).status_code == 200
        assert server.returncode == 0, server.output()
    output = server.output()
    assert "s3cr3t" not in output
    assert "Traceback" not in output
