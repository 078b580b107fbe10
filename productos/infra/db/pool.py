"""Pre-ping for connections that have sat idle, instead of for every checkout.

SQLAlchemy's ``pool_pre_ping`` costs one database round trip per checkout, so a request that runs one query
pays for two. A connection that was checked in a moment ago is as alive as a ping would show: it is only the
connections left idle (across a failover, a restart, a NAT or proxy idle timeout) that go stale unseen. This
pings a connection when it has been idle for at least ``idle_seconds``; a dead one raises
``DisconnectionError`` and the pool transparently replaces it, as pre-ping does. A connection that dies while
in steady use fails its statement instead; SQLAlchemy then invalidates it and every older pooled connection,
so the pool recovers on the next checkout. ``idle_seconds=0`` pings on every checkout.

A connection the server has already closed (a restart's or a terminated backend's goodbye arrived while it sat
in the pool) is replaced on checkout whatever its idle time: asyncpg knows it without a round trip.

``close_without_waiting``: no connection's close is ever awaited in a request (see there).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine

_CHECKED_IN_AT = "productos_checked_in_at"


def install_idle_pre_ping(engine: AsyncEngine, idle_seconds: float) -> None:
    """Ping connections idle for ``idle_seconds`` or more when they leave the pool.

    Use with ``pool_pre_ping=False``; the engine's dialect must implement ``do_ping`` (asyncpg and aiosqlite do).
    """
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect
    knows_closed = dialect.driver == "asyncpg"

    @event.listens_for(pool, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if knows_closed and dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the server closed this pooled connection")
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        # A connection opened for this checkout has just logged in: nothing to verify.
        if checked_in_at is None or time.monotonic() - checked_in_at < idle_seconds:
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None) or isinstance(exc, OSError | TimeoutError):  # type: ignore[arg-type]
                raise DisconnectionError("pooled connection failed its ping") from exc
            raise
        if alive is False:
            raise DisconnectionError("pooled connection failed its ping")


def close_without_waiting(engine: AsyncEngine) -> None:
    """Close ``engine``'s asyncpg connections at once, never waiting for the server (PostgreSQL only).

    SQLAlchemy closes a connection it invalidates (a failed pre-ping, a checkout cancelled at its deadline, a
    connection recycled after a lost server) with asyncpg's graceful ``close(timeout=2)``, awaited by whichever
    request is checking a connection out: with the server hung, that request waits up to 2 s more than its
    deadline, and longer when a cancelled statement's cancel request must go first. asyncpg's ``terminate()``
    sends the same Terminate message, closes the socket and returns; SQLAlchemy's close then finds the
    connection closed and returns at once.
    """

    @event.listens_for(engine.sync_engine.pool, "close")
    def _terminate(dbapi_connection: Any, _record: Any) -> None:
        # Should it fail (a transport whose loop has gone), SQLAlchemy's own close still runs after this.
        with contextlib.suppress(Exception):
            dbapi_connection.driver_connection.terminate()
