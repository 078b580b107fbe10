"""Alembic environment of the products service (``productos migrate`` runs it)."""

from productos.infra.db.migrate import run_migrations
from productos.infra.db.tables import metadata

run_migrations(metadata)
