"""Alembic migrations for services built on productos, and the service's row-only database login.

A service ships its migrations inside its package (``mypackage/migrations/``, with ``versions/``) and an
``env.py`` of two lines::

    from mypackage.tables import metadata
    from productos.migrations import run_migrations

    run_migrations(metadata)

``create_service(migrations=[Migrations("mypackage:migrations", version_table="mypackage_alembic_version")])``
applies them at start on the embedded SQLite default; ``productos migrate --script-location mypackage:migrations
--version-table mypackage_alembic_version`` applies them elsewhere, from one process, as the schema owner.

Least privilege: with ``DATABASE_MIGRATE_URL`` (the owner) and a ``DATABASE_URL`` that logs in as another user,
``productos migrate`` makes that user a role that may only read and write rows (``RowRole``, ``DB_APP_ROLE``),
so the service itself cannot change the schema. ``upgrade_to_head(..., row_role=RowRole.from_settings(settings))``
does the same from your own code.
"""

from productos.infra.db.migrate import Migrations, alembic_config, run_migrations, upgrade_to_head, wait_for_database
from productos.infra.db.roles import RowRole, RowRoleReport, grant_row_role, scram_sha_256_verifier

__all__ = [
    "Migrations",
    "RowRole",
    "RowRoleReport",
    "alembic_config",
    "grant_row_role",
    "run_migrations",
    "scram_sha_256_verifier",
    "upgrade_to_head",
    "wait_for_database",
]
