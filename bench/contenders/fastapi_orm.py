"""(d) A typical FastAPI + SQLAlchemy asyncio ORM service: what a user would otherwise write.

Declarative model, one ``AsyncSession`` per request through a dependency, endpoints that return ORM objects
through pydantic ``response_model``s, ``commit()`` + ``refresh()`` after an insert, ``skip``/``limit``
(OFFSET) pagination as in FastAPI's SQL tutorial, and the architecture guide's pool settings
(``pool_pre_ping=True, pool_recycle=3600``; the pool's size and overflow are the benchmark's, the same for
every contender: ``BENCH_POOL_MIN`` and ``BENCH_POOL_MAX``, the guide's 10 + 20 without them).

``gunicorn -w 2 -k uvicorn_worker.UvicornWorker bench.contenders.fastapi_orm:app``
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import BigInteger, DateTime, Integer, Numeric, String, Text, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bench.contenders._rows import POOL_MAX, POOL_MIN


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Producto(Base):
    __tablename__ = "productos"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    nombre: Mapped[str] = mapped_column(String(200))
    descripcion: Mapped[str | None] = mapped_column(Text)
    precio: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    stock: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class ProductoCreate(BaseModel):
    nombre: str = Field(min_length=1, max_length=200)
    descripcion: str | None = None
    precio: Decimal = Field(gt=0, max_digits=10, decimal_places=2)
    stock: int = Field(0, ge=0)


class ProductoOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    nombre: str
    descripcion: str | None
    precio: float
    stock: int
    created_at: datetime
    updated_at: datetime
    version: int


_url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+asyncpg://", 1)
engine = create_async_engine(
    _url, pool_size=POOL_MIN, max_overflow=POOL_MAX - POOL_MIN, pool_pre_ping=True, pool_recycle=3600
)
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)


async def get_session() -> AsyncIterator[AsyncSession]:
    async with SessionLocal() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]

app = FastAPI()


@app.get("/productos", response_model=list[ProductoOut])
async def list_productos(session: SessionDep, skip: int = 0, limit: int = 100) -> list[Producto]:
    result = await session.execute(select(Producto).order_by(Producto.id).offset(skip).limit(limit))
    return list(result.scalars().all())


@app.post("/productos", response_model=ProductoOut, status_code=201)
async def create_producto(body: ProductoCreate, session: SessionDep) -> Producto:
    producto = Producto(**body.model_dump())
    session.add(producto)
    await session.commit()
    await session.refresh(producto)
    return producto


@app.get("/productos/{producto_id}", response_model=ProductoOut)
async def get_producto(producto_id: int, session: SessionDep) -> Producto:
    producto = await session.get(Producto, producto_id)
    if producto is None:
        raise HTTPException(status_code=404, detail="Producto no encontrado")
    return producto
