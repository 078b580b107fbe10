"""The database toolkit a service's repositories build on.

- Units of work: ``SqlAlchemyUnitOfWorkBase`` (SQLAlchemy Core on any engine) and ``DriverUnitOfWorkBase``
  (SQL on the pooled asyncpg connection, PostgreSQL): one connection per unit, one transaction for writes,
  ``read_only`` and ``autocommit`` units in a single round trip, deadlines on getting a connection, and driver
  errors translated into domain errors (``ConflictError``, ``DatabaseUnavailableError``).
- Column types that mean the same on every backend: ``UtcDateTime``, ``Money``.
- ``translate_db_errors``: the same translation, around anything else a repository runs.

Every statement is timed (``db.client.operation.duration``) and traced by the runtime's instrumentation.
"""

from productos.infra.db.driver import DriverConnection, DriverUnitOfWorkBase, supports_driver_statements
from productos.infra.db.types import Money, UtcDateTime
from productos.infra.db.uow import (
    EngineUnitOfWorkFactory,
    SqlAlchemyHealthProbe,
    SqlAlchemyUnitOfWorkBase,
    translate_db_errors,
)

__all__ = [
    "DriverConnection",
    "DriverUnitOfWorkBase",
    "EngineUnitOfWorkFactory",
    "Money",
    "SqlAlchemyHealthProbe",
    "SqlAlchemyUnitOfWorkBase",
    "UtcDateTime",
    "supports_driver_statements",
    "translate_db_errors",
]
