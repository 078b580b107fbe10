"""Alembic environment of pedidos, run by ``productos migrate --script-location pedidos:migrations``."""

from pedidos.tables import metadata
from productos.infra.db.migrate import run_migrations

run_migrations(metadata)
