"""(e) The original products app's shape, rebuilt minimally: the app the architecture guide was written for.

Sync SQLAlchemy (psycopg2) sessions from a ``get_db`` generator dependency, used inside ``async def``
endpoints (so every query blocks the event loop), the guide's engine settings (``pool_pre_ping=True,
pool_recycle=3600``; size and overflow the benchmark's, as every contender's), ``db.query(...)`` and no pagination:
``GET /productos`` returns every row.

``gunicorn -w 2 -k uvicorn_worker.UvicornWorker bench.contenders.original:app``
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict
from sqlalchemy import BigInteger, Column, DateTime, Integer, Numeric, String, Text, create_engine
from sqlalchemy.orm import Session, declarative_base, sessionmaker

from bench.contenders._rows import POOL_MAX, POOL_MIN

# The original ran psycopg2 (SQLAlchemy 2.1's default PostgreSQL driver is psycopg 3: name it).
DATABASE_URL = os.environ["DATABASE_URL"].split("://", 1)[1]
DATABASE_URL = f"postgresql+psycopg2://{DATABASE_URL}"

engine = create_engine(
    DATABASE_URL, pool_size=POOL_MIN, max_overflow=POOL_MAX - POOL_MIN, pool_pre_ping=True, pool_recycle=3600
)
SessionLocal = sessionmaker(autocommit=False, autoflush=False, bind=engine)
Base = declarative_base()


def get_db() -> Iterator[Session]:
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()


def _now() -> datetime:
    return datetime.now(UTC)


class ProductoModel(Base):  # type: ignore[valid-type,misc]
    __tablename__ = "productos"

    id = Column(BigInteger, primary_key=True, index=True)
    nombre = Column(String(200), nullable=False)
    descripcion = Column(Text, nullable=True)
    precio = Column(Numeric(10, 2), nullable=False)
    stock = Column(Integer, default=0)
    version = Column(Integer, default=1)
    created_at = Column(DateTime(timezone=True), default=_now)
    updated_at = Column(DateTime(timezone=True), default=_now)


class ProductoBase(BaseModel):
    nombre: str
    descripcion: str | None = None
    precio: float
    stock: int = 0


class ProductoCreate(ProductoBase):
    pass


class Producto(ProductoBase):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    updated_at: datetime
    version: int


router = APIRouter(prefix="/productos", tags=["productos"])


@router.get("/", response_model=list[Producto])
async def listar_productos(db: Session = Depends(get_db)):  # type: ignore[no-untyped-def]  # noqa: B008
    return db.query(ProductoModel).all()


@router.get("/{producto_id}", response_model=Producto)
async def obtener_producto(producto_id: int, db: Session = Depends(get_db)):  # type: ignore[no-untyped-def]  # noqa: B008
    producto = db.query(ProductoModel).filter(ProductoModel.id == producto_id).first()
    if producto is None:
        raise HTTPException(status_code=404, detail="Producto no encontrado")
    return producto


@router.post("/", response_model=Producto, status_code=201)
async def crear_producto(producto: ProductoCreate, db: Session = Depends(get_db)):  # type: ignore[no-untyped-def]  # noqa: B008
    db_producto = ProductoModel(**producto.model_dump())
    db.add(db_producto)
    db.commit()
    db.refresh(db_producto)
    return db_producto


app = FastAPI(title="API de Productos")
app.include_router(router)
