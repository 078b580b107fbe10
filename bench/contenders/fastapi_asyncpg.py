"""(c) FastAPI on a raw asyncpg pool, no ORM: the limit for any FastAPI service.

Typed path and query parameters, a pydantic body for POST, responses serialised once with ``json``.
``gunicorn -w 2 -k uvicorn_worker.UvicornWorker bench.contenders.fastapi_asyncpg:app``
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated

import asyncpg  # type: ignore[import-untyped]
from fastapi import FastAPI, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from bench.contenders._rows import INSERT, POOL_MAX, POOL_MIN, SELECT_ONE, SELECT_PAGE, dsn, dump, row_dict


class ProductoIn(BaseModel):
    nombre: str = Field(min_length=1, max_length=200)
    descripcion: str | None = None
    precio: Decimal = Field(gt=0, max_digits=10, decimal_places=2)
    stock: int = Field(0, ge=0)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, asyncpg.Pool]]:
    async with asyncpg.create_pool(dsn(), min_size=POOL_MIN, max_size=POOL_MAX) as pool:
        yield {"pool": pool}


app = FastAPI(lifespan=lifespan)


def _json(body: bytes, status_code: int = 200) -> Response:
    return Response(body, status_code=status_code, media_type="application/json")


@app.get("/productos")
async def list_productos(
    request: Request,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    rows = await request.state.pool.fetch(SELECT_PAGE, after, limit)
    return _json(dump([row_dict(r) for r in rows]))


@app.post("/productos", status_code=201)
async def create_producto(request: Request, body: ProductoIn) -> Response:
    row = await request.state.pool.fetchrow(INSERT, body.nombre, body.descripcion, body.precio, body.stock)
    return _json(dump(row_dict(row)), status_code=201)


@app.get("/productos/{producto_id}")
async def get_producto(request: Request, producto_id: int) -> Response:
    row = await request.state.pool.fetchrow(SELECT_ONE, producto_id)
    if row is None:
        raise HTTPException(404, f"Producto {producto_id} no encontrado")
    return _json(dump(row_dict(row)))
