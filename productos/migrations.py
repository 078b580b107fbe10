"""Alembic migrations for services built on productos.

A service ships its migrations inside its package (``mypackage/migrations/``, with ``versions/``) and an
``env.py`` of two lines::

    from mypackage.tables import metadata
    from productos.migrations import run_migrations

    run_migrations(metadata)

``create_service(migrations=[Migrations("mypackage:migrations", version_table="mypackage_alembic_version")])``
applies them at start on the embedded SQLite default; ``productos migrate --script-location mypackage:migrations
--version-table mypackage_alembic_version`` applies them elsewhere, from one process, as the schema owner.
"""

from productos.infra.db.migrate import Migrations, alembic_config, run_migrations, upgrade_to_head

__all__ = ["Migrations", "alembic_config", "run_migrations", "upgrade_to_head"]
