"""Alembic environment of pedidos, run by ``productos migrate --script-location pedidos:migrations``."""

from pedidos.tables import metadata
from productos.migrations import run_migrations

run_migrations(metadata)
