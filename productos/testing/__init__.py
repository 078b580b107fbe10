"""Test helpers for services built on productos: import them in tests, never in the runtime (they need pytest).

- ``contract_backends``: a pytest fixture that runs a service's repository contract suite on its in-memory
  fake, on SQLite and on PostgreSQL, each migrated with the service's own migrations.
- ``RecordingPublisher``: a metrics publisher that records what it gets and fails on demand.
- ``PgBouncer``: PgBouncer in transaction pooling mode on a free port, in front of a PostgreSQL server, for tests
  of a service that runs behind one (``DB_POOLER=transaction``).
"""

from productos.testing.contract import DEFAULT_POSTGRES_URL, contract_backends, postgres_server_url
from productos.testing.pgbouncer import PgBouncer
from productos.testing.publishers import RecordingPublisher

__all__ = ["DEFAULT_POSTGRES_URL", "PgBouncer", "RecordingPublisher", "contract_backends", "postgres_server_url"]
