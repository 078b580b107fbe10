"""Database adapters: the SQLAlchemy asyncio engine and pool, units of work, statements on the pooled asyncpg
connection, column types, migrations. Services use them through ``productos.db`` and ``productos.migrations``."""
