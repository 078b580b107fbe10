"""(b) A bare ASGI callable on an asyncpg pool: no framework, no ORM. The physical limit of this stack.

``gunicorn -w 2 -k uvicorn_worker.UvicornWorker bench.contenders.raw_asgi:app``
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import asyncpg  # type: ignore[import-untyped]

from bench.contenders._rows import INSERT, POOL_MAX, POOL_MIN, SELECT_ONE, SELECT_PAGE, dsn, dump, row_dict

_pool: asyncpg.Pool | None = None
_JSON = [(b"content-type", b"application/json")]


async def _respond(send: Any, status: int, body: bytes) -> None:
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _parse_new(body: bytes) -> tuple[str, str | None, Decimal, int] | None:
    try:
        data = json.loads(body)
        nombre, descripcion = data["nombre"], data.get("descripcion")
        precio, stock = Decimal(str(data["precio"])), data.get("stock", 0)
    except (ValueError, KeyError, TypeError, ArithmeticError):
        return None
    if not isinstance(nombre, str) or not nombre.strip() or not (descripcion is None or isinstance(descripcion, str)):
        return None
    if not precio.is_finite() or precio <= 0 or not isinstance(stock, int) or stock < 0:
        return None
    return nombre.strip(), descripcion, precio, stock


async def _lifespan(receive: Any, send: Any) -> None:
    global _pool
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _pool = await asyncpg.create_pool(dsn(), min_size=POOL_MIN, max_size=POOL_MAX)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _pool is not None:
                await _pool.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    assert _pool is not None
    path: str = scope["path"].rstrip("/")
    method: str = scope["method"]
    if path == "/productos":
        if method == "GET":
            query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
            try:
                after, limit = int(query.get("after", 0)), int(query.get("limit", 100))
            except ValueError:
                await _respond(send, 422, b'{"detail":"invalid query"}')
                return
            rows = await _pool.fetch(SELECT_PAGE, after, max(1, min(limit, 1000)))
            await _respond(send, 200, dump([row_dict(r) for r in rows]))
            return
        if method == "POST":
            new = _parse_new(await _read_body(receive))
            if new is None:
                await _respond(send, 422, b'{"detail":"invalid body"}')
                return
            row = await _pool.fetchrow(INSERT, *new)
            await _respond(send, 201, dump(row_dict(row)))
            return
    elif path.startswith("/productos/") and method == "GET":
        tail = path[len("/productos/") :]
        if tail.isdigit() and len(tail) < 19:
            row = await _pool.fetchrow(SELECT_ONE, int(tail))
            if row is not None:
                await _respond(send, 200, dump(row_dict(row)))
                return
        await _respond(send, 404, b'{"detail":"Producto no encontrado"}')
        return
    await _respond(send, 404, b'{"detail":"Not Found"}')
