"""The orders table (SQLAlchemy Core); the migrations in ``pedidos/migrations`` create it."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table

from productos.db import UtcDateTime

metadata = MetaData()

pedidos_table = Table(
    "pedidos",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    # A reference to the products service's id, not a foreign key: the two services own their own tables.
    Column("producto_id", BigInteger(), nullable=False, index=True),
    Column("cantidad", Integer(), nullable=False),
    Column("estado", String(20), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    sqlite_autoincrement=True,
)
