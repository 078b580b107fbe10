"""Create the productos table.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "productos",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(always=False),
            primary_key=True,
        ),
        sa.Column("nombre", sa.String(200), nullable=False),
        sa.Column("descripcion", sa.Text().with_variant(sa.String(5000), "sqlite"), nullable=True),
        # Exact to the cent; SQLite has no exact decimal type, so it stores integer cents.
        sa.Column("precio", sa.Numeric(10, 2).with_variant(sa.BigInteger(), "sqlite"), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("precio > 0", name="ck_productos_precio_positive"),
        sa.CheckConstraint("stock >= 0", name="ck_productos_stock_non_negative"),
        sa.CheckConstraint("char_length(nombre) > 0", name="ck_productos_nombre_not_empty").ddl_if(
            dialect="postgresql"
        ),
        # Ids of deleted rows are never handed out again (a stale id or ETag must not address another product).
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("productos")
