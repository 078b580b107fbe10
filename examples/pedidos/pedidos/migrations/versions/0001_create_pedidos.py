"""Create the pedidos table.

Revision ID: pedidos_0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "pedidos_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pedidos",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(), primary_key=True),
        sa.Column("producto_id", sa.BigInteger(), nullable=False),
        sa.Column("cantidad", sa.Integer(), nullable=False),
        sa.Column("estado", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("cantidad > 0", name="ck_pedidos_cantidad_positive"),
        sa.CheckConstraint("estado IN ('pendiente', 'pagado', 'enviado', 'cancelado')", name="ck_pedidos_estado_known"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_pedidos_producto_id", "pedidos", ["producto_id"])


def downgrade() -> None:
    op.drop_index("ix_pedidos_producto_id", "pedidos")
    op.drop_table("pedidos")
