"""End-to-end: real gunicorn processes with 2 UvicornWorkers on PostgreSQL, driven over HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections import Counter
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.integration.servers import PLAIN, TUNED, Gunicorn

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _crud_roundtrip(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        assert client.get("/health").json() == {
            "status": "healthy",
            "service": "productos-api",
            "database": "connected",
        }
        created = client.post("/productos", json={"nombre": "Teclado", "precio": 49.99, "stock": 3})
        assert created.status_code == 201, created.text
        producto = created.json()
        assert (producto["nombre"], producto["precio"], producto["stock"]) == ("Teclado", 49.99, 3)
        url = f"/productos/{producto['id']}"
        assert client.get(url).json()["precio"] == 49.99
        assert client.get(url + "/").status_code == 200
        assert any(p["id"] == producto["id"] for p in client.get("/productos/").json())
        replaced = client.put(url, json={"nombre": "Teclado mecánico", "precio": "59.90", "stock": 1})
        assert replaced.status_code == 200 and replaced.json()["nombre"] == "Teclado mecánico"
        patched = client.patch(url, json={"stock": 7})
        assert patched.json()["stock"] == 7 and patched.json()["precio"] == 59.9
        assert client.delete(url).status_code == 204
        assert client.get(url).status_code == 404
        assert client.delete(url).status_code == 404


@pytest.mark.parametrize("args", [TUNED, PLAIN], ids=["tuned-config", "plain-uvicorn-worker"])
def test_both_gunicorn_command_lines_serve_the_contract(
    workdir: Path, database_url: str, args: tuple[str, ...]
) -> None:
    with Gunicorn(workdir, {"DATABASE_URL": database_url}, args=args) as server:
        _crud_roundtrip(server.base_url)


def test_productos_serve_on_the_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No configuration at all: ``productos serve`` migrates a SQLite file (two workers racing) and serves."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    command = [sys.executable, "-m", "productos", "serve"]
    with Gunicorn(tmp_path, {}, command=command) as server:
        _crud_roundtrip(server.base_url)
    assert (tmp_path / "productos.db").is_file()


async def test_sigterm_lets_in_flight_requests_finish(workdir: Path, database_url: str) -> None:
    """Slow requests (blocked on a row lock the test holds) all complete after SIGTERM reaches gunicorn."""
    # The PATCHes wait on the lock for 2.5 s and more: past the default DB_LOCK_TIMEOUT (1 s, a 409), which may
    # be at most half of DB_STATEMENT_TIMEOUT.
    env = {
        "DATABASE_URL": database_url,
        "PRODUCTOS_GRACEFUL_TIMEOUT": "20",
        "DB_STATEMENT_TIMEOUT": "20",
        "DB_LOCK_TIMEOUT": "10",
    }
    with Gunicorn(workdir, env) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            created = (await client.post("/productos", json={"nombre": "lento", "precio": 1})).json()
            url = f"/productos/{created['id']}"
            locker = await asyncpg.connect(database_url.replace("postgres://", "postgresql://"))
            try:
                lock = locker.transaction()
                await lock.start()
                await locker.execute("SELECT 1 FROM productos WHERE id = $1 FOR UPDATE", created["id"])
                in_flight = [asyncio.create_task(client.patch(url, json={"stock": n})) for n in range(1, 11)]
                await asyncio.sleep(1.0)  # every PATCH is now waiting on the row lock
                assert not any(task.done() for task in in_flight)
                server.terminate()
                await asyncio.sleep(1.5)  # the workers have begun their graceful shutdown
                assert not any(task.done() for task in in_flight)
                await lock.rollback()
            finally:
                await locker.close()
            responses = await asyncio.gather(*in_flight)
        assert [r.status_code for r in responses] == [200] * 10
        assert sorted(r.json()["version"] for r in responses) == list(range(2, 12))
        assert await asyncio.to_thread(server.wait, 30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.base_url}/health/live", timeout=2)
    assert "Shutting down" in server.output()


def _request(sock: socket.socket) -> bytes:
    """One request on ``sock``; returns the whole response (headers and Content-Length body)."""
    sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return data


def test_keepalive_setting_reaches_the_uvicorn_worker(workdir: Path, database_url: str) -> None:
    """The worker keeps an idle connection open for PRODUCTOS_KEEPALIVE seconds, then closes it."""
    with Gunicorn(workdir, {"DATABASE_URL": database_url, "PRODUCTOS_KEEPALIVE": "3"}) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            assert _request(sock).startswith(b"HTTP/1.1 200")
            time.sleep(2)
            assert _request(sock).startswith(b"HTTP/1.1 200"), "closed before the keep-alive timeout"
            idle_from = time.monotonic()
            assert sock.recv(1) == b"", "the server should close the idle connection"
            waited = time.monotonic() - idle_from
        assert 2.5 <= waited <= 5, waited


@pytest.mark.parametrize("freeze", ["true", "false"])
def test_each_worker_freezes_its_startup_objects_unless_told_not_to(
    workdir: Path, database_url: str, freeze: str
) -> None:
    with Gunicorn(workdir, {"DATABASE_URL": database_url, "PRODUCTOS_GC_FREEZE": freeze}) as server:
        assert httpx.get(f"{server.base_url}/productos", timeout=10).status_code == 200
        # The server is up once one worker answers; the other may still be starting on a busy machine.
        deadline = time.monotonic() + 30
        while True:
            lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
            awaited = "froze " if freeze == "true" else "started"
            seen = {line["pid"] for line in lines if line["message"].startswith(awaited)}
            if len(seen) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    frozen = [line for line in lines if line["message"].startswith("froze ")]
    if freeze == "false":
        assert frozen == []
        return
    assert len({line["pid"] for line in frozen}) == 2  # each worker, once
    for line in frozen:
        count = int(line["message"].split()[1])
        assert count > 100_000, line  # FastAPI, SQLAlchemy, pydantic... all frozen, not a handful


def test_default_keepalive_outlasts_the_alb_idle_timeout() -> None:
    from productos import gunicorn_conf

    assert gunicorn_conf.keepalive > 60
    assert gunicorn_conf.worker_class == "productos.entrypoints.worker.ProductosUvicornWorker"


async def test_64_concurrent_clients_keep_getting_answers(workdir: Path, database_url: str) -> None:
    """The original app deadlocks here (blocking calls in async handlers exhaust its pool)."""
    with Gunicorn(workdir, {"DATABASE_URL": database_url}) as server:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10, limits=limits) as client:
            created = (await client.post("/productos", json={"nombre": "carga", "precio": 2.5})).json()
            url = f"/productos/{created['id']}"
            statuses: list[int] = []
            deadline = time.monotonic() + 3

            async def user(n: int) -> None:
                while time.monotonic() < deadline:
                    if n % 4 == 0:
                        response = await client.patch(url, json={"stock": n})
                    else:
                        response = await client.get(url)
                    statuses.append(response.status_code)

            await asyncio.gather(*(user(n) for n in range(64)))
    assert len(statuses) > 64 * 3
    assert set(statuses) == {200}, Counter(statuses)
