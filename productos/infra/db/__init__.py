"""Database adapters: the SQLAlchemy asyncio engine and pool, schema, repositories (SQLAlchemy Core, and SQL on the
pooled asyncpg connection), units of work, migrations."""

from productos.infra.db.asyncpg_repository import AsyncpgProductRepository, AsyncpgUnitOfWork, AsyncpgUnitOfWorkFactory
from productos.infra.db.driver import DriverConnection, DriverUnitOfWorkBase, add_statement_listener
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
    "AsyncpgProductRepository",
    "AsyncpgUnitOfWork",
    "AsyncpgUnitOfWorkFactory",
    "DatabaseTarget",
    "DriverConnection",
    "DriverUnitOfWorkBase",
    "SqlAlchemyHealthProbe",
    "SqlAlchemyProductRepository",
    "SqlAlchemyUnitOfWork",
    "SqlAlchemyUnitOfWorkBase",
    "SqlAlchemyUnitOfWorkFactory",
    "add_statement_listener",
    "create_engine",
    "parse_database_url",
    "translate_db_errors",
    "upgrade_to_head",
]
