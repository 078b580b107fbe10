"""SQLAlchemy asyncio adapters: engine, schema, repository, unit of work, migrations."""

from productos.infra.db.engine import create_engine
from productos.infra.db.migrate import upgrade_to_head
from productos.infra.db.repository import (
    SqlAlchemyHealthProbe,
    SqlAlchemyProductRepository,
    SqlAlchemyUnitOfWork,
    SqlAlchemyUnitOfWorkFactory,
)
from productos.infra.db.uow import SqlAlchemyUnitOfWorkBase, translate_db_errors
from productos.infra.db.url import DatabaseTarget, parse_database_url

__all__ = [
    "DatabaseTarget",
    "SqlAlchemyHealthProbe",
    "SqlAlchemyProductRepository",
    "SqlAlchemyUnitOfWork",
    "SqlAlchemyUnitOfWorkBase",
    "SqlAlchemyUnitOfWorkFactory",
    "create_engine",
    "parse_database_url",
    "translate_db_errors",
    "upgrade_to_head",
]
