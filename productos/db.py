"""The database toolkit a service's repositories build on.

- ``SqlUnitOfWork`` and ``SqlConnection``: repositories write SQLAlchemy Core statements once (at module level,
  or from a cached builder) with ``bindparam()`` for the values, and run them with ``fetch_one``,
  ``fetch_all``, ``fetch_value`` and ``execute``. On PostgreSQL each statement is compiled once per shape and
  runs on the pooled asyncpg connection, at raw asyncpg speed; on the embedded SQLite default SQLAlchemy runs
  it. A statement built anew on every call works too, at about SQLAlchemy Core's cost (it pays SQLAlchemy's
  cache key each time). ``docs/architecture.md`` lists what the fast path does not cover.
- Every unit: one connection, one transaction for writes, ``read_only`` and ``autocommit`` units in a single
  round trip, one deadline on getting a connection, driver errors translated into domain errors
  (``ConflictError``, ``DatabaseUnavailableError``); ``MyUnitOfWork.factory(engine)`` makes them.
- Lower level: ``SqlAlchemyUnitOfWorkBase`` (an ``AsyncConnection``) and ``DriverUnitOfWorkBase`` (a
  ``DriverConnection``, asyncpg's SQL text) for what Core statements do not express.
- Column types that mean the same on every backend: ``UtcDateTime``, ``Money``.
- ``translate_db_errors``: the same translation, around anything else a repository runs.
- ``ReadReplica``: ``DATABASE_READ_URL``'s engine and state (``runtime.replica``). Given to a factory
  (``MyUnitOfWork.factory(engine, replica=runtime.replica)``), it takes the factory's read-only units while it is
  connected and within ``DB_READ_MAX_LAG``, and until the request writes (read-your-writes); ``read_your_writes()``
  opens such a scope outside HTTP requests (a job's unit of work), ``note_write()`` records a write made outside
  the units of work.

Every statement is timed (``db.client.operation.duration``) and traced by the runtime's instrumentation.
"""

from productos.infra.db.driver import DriverConnection, DriverUnitOfWorkBase, supports_driver_statements
from productos.infra.db.replica import ReadReplica, note_write, read_your_writes
from productos.infra.db.statements import SqlConnection, SqlRow, SqlUnitOfWork
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
    "ReadReplica",
    "SqlAlchemyHealthProbe",
    "SqlAlchemyUnitOfWorkBase",
    "SqlConnection",
    "SqlRow",
    "SqlUnitOfWork",
    "UtcDateTime",
    "note_write",
    "read_your_writes",
    "supports_driver_statements",
    "translate_db_errors",
]
