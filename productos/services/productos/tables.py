"""The products table (SQLAlchemy Core). Migrations in ``migrations/`` create it; nothing calls ``create_all``."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text

from productos.db import Money, UtcDateTime
from productos.services.productos.domain import DESCRIPCION_MAX_LENGTH, NOMBRE_MAX_LENGTH

__all__ = ["metadata", "productos_table"]

metadata = MetaData()

productos_table = Table(
    "productos",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("nombre", String(NOMBRE_MAX_LENGTH), nullable=False),
    Column("descripcion", Text().with_variant(String(DESCRIPCION_MAX_LENGTH), "sqlite"), nullable=True),
    Column("precio", Money(), nullable=False),
    Column("stock", Integer(), nullable=False, default=0),
    Column("version", Integer(), nullable=False, default=1),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    sqlite_autoincrement=True,
)
