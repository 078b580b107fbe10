"""Alembic environment of the products service (``productos migrate`` runs it)."""

from productos.migrations import run_migrations
from productos.services.productos.tables import metadata

run_migrations(metadata)
