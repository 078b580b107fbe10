"""What a PostgreSQL server allows: its ``max_connections`` less the slots it keeps for superusers and roles of its
own, the default connection budget (``DB_CONNECTION_BUDGET``; ``productos.domain.connection_budget``)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["RESERVED_SETTINGS", "ServerConnections", "server_connections"]

#: The settings that keep connection slots from ordinary logins: PostgreSQL's own (``reserved_connections``
#: since 16, for pg_use_reserved_connections) and RDS's for its rds_superuser role. Unknown ones count 0.
RESERVED_SETTINGS = (
    "superuser_reserved_connections",
    "reserved_connections",
    "rds.rds_superuser_reserved_connections",
)

_QUERY = text(
    "SELECT current_setting('max_connections')::int AS max_connections, "
    + ", ".join(
        f"COALESCE(NULLIF(current_setting('{name}', true), ''), '0')::int AS r{i}"
        for i, name in enumerate(RESERVED_SETTINGS)
    )
)


@dataclass(frozen=True)
class ServerConnections:
    """A server's connection slots: ``max_connections`` and those reserved (by setting name)."""

    max_connections: int
    reserved: dict[str, int]

    @property
    def available(self) -> int:
        """The slots ordinary logins can use."""
        return max(self.max_connections - sum(self.reserved.values()), 0)

    def describe(self) -> str:
        """``max_connections 100 - 3 reserved (superuser_reserved_connections)``; each setting's share when more
        than one reserves slots."""
        held = {name: count for name, count in self.reserved.items() if count}
        if not held:
            return f"max_connections {self.max_connections}"
        names = ", ".join(held) if len(held) == 1 else ", ".join(f"{name} {count}" for name, count in held.items())
        return f"max_connections {self.max_connections} - {sum(held.values())} reserved ({names})"


async def server_connections(connection: AsyncConnection) -> ServerConnections:
    """Read the server's connection slots on ``connection`` (one query; through a pooler, the server's)."""
    row = (await connection.execute(_QUERY)).one()
    return ServerConnections(int(row[0]), {name: int(row[i + 1]) for i, name in enumerate(RESERVED_SETTINGS)})
