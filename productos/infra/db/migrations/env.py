"""Alembic environment. ``productos.infra.db.migrate`` passes the connection in ``config.attributes``."""

from __future__ import annotations

from alembic import context

from productos.infra.db.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `productos migrate` (productos.infra.db.migrate.upgrade_to_head)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    version_table=context.config.attributes.get("version_table", "alembic_version"),
)
with context.begin_transaction():
    context.run_migrations()
