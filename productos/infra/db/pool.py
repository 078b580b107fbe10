"""The engine's pool: a fair wait for a connection, and pre-ping for connections that have sat idle.

``FairAsyncQueuePool``: SQLAlchemy's ``AsyncAdaptedQueuePool`` with a queue (``FairAsyncQueue``) that serves the
callers waiting for a connection in the order they came. SQLAlchemy's own queue is an ``asyncio.Queue``: a
returned connection is put in the queue and the first waiter woken, but the waiter takes it only when its task
next runs; any task that asks in between (a request that has just arrived: SQLAlchemy's ``get`` tries
``get_nowait`` first) takes it instead, and the waiter, finding the queue empty, waits again at the back of the
line. With a small pool under load most connections go to newcomers while some waiters are passed over again and
again: the 99th percentile grows with the length of the line, not with the work (issue 13: 204-243 ms at 64
clients on 10 connections per worker, against 33 ms for FastAPI on an asyncpg pool of 10). SQLAlchemy 2.0 also
waits through ``asyncio.wait_for``, which on Python 3.11 makes a task per wait. Here a returned connection goes
straight to the oldest waiter (its future's result), so no one can take it on the way; a newcomer takes an idle
connection only when no one is waiting. A wait is one future and one timer (``loop.call_later``), no task.

Pre-ping for connections that have sat idle, instead of for every checkout.

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

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util.queue import Empty, Full, QueueCommon

try:
    from sqlalchemy.util import await_
except ImportError:  # SQLAlchemy 2.0 names it await_only
    from sqlalchemy.util import await_only as await_

__all__ = ["FairAsyncQueue", "FairAsyncQueuePool", "close_without_waiting", "install_idle_pre_ping"]

_CHECKED_IN_AT = "productos_checked_in_at"

#: A waiter's result when its deadline passed before a connection came.
_EXPIRED: Any = object()


class FairAsyncQueue(QueueCommon[Any]):
    """The connections of a pool, and the callers waiting for one, first come first served.

    - ``put`` gives the item to the oldest waiter, if any, as its future's result: the item is that waiter's
      from then on. Only when no one waits does it join the idle ones (``Full`` past ``maxsize``, as SQLAlchemy's
      queues say, and the pool then closes it).
    - ``get`` takes an idle item at once (idle items exist only while no one waits: a newcomer never passes a
      waiter). Else, with ``block``, it waits at the back of the line until an item is handed to it or
      ``timeout`` seconds have passed (``Empty``).
    - A waiter that is cancelled (the request's own deadline, a disconnect) leaves the line; if an item had
      already been handed to it, the item goes to the next waiter or back to the idle ones, never lost.

    Idle items are taken newest first with ``use_lifo`` (the pool's ``pool_use_lifo``: the connections used
    least are left to time out on the server), else oldest first. Waiters are always first come first served.
    ``get`` with ``block`` must run inside SQLAlchemy's greenlet, on the event loop, as the pool's checkout does.
    """

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        self._idle: deque[Any] = deque()
        # Futures of the callers waiting, oldest first; one whose deadline passed or whose caller was cancelled
        # is removed at once, and skipped if still there.
        self._waiters: deque[asyncio.Future[Any]] = deque()

    @property
    def waiting(self) -> int:
        """How many callers are waiting for an item."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    def empty(self) -> bool:
        return not self._idle

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._idle)

    def qsize(self) -> int:
        return len(self._idle)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Hand ``item`` to the oldest waiter, else keep it idle.

        Never blocks: the pool puts only what it took out, without blocking, and closes what does not fit; with
        the queue full (only overflow connections make it so) this raises ``Full`` whatever ``block`` says.
        """
        while self._waiters:
            waiter = self._waiters.popleft()
            # A waiter whose event loop has closed (its task never ran again) can take nothing.
            if not waiter.done() and not waiter.get_loop().is_closed():
                waiter.set_result(item)
                return
        if self.full():
            raise Full()
        self._idle.append(item)

    def get_nowait(self) -> Any:
        if not self._idle:
            raise Empty()
        return self._idle.pop() if self.use_lifo else self._idle.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if self._idle or not block or (timeout is not None and timeout <= 0):
            return self.get_nowait()
        return await_(self._wait(timeout))

    async def _wait(self, timeout: float | None) -> Any:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        timer = None if timeout is None else loop.call_later(timeout, self._expire, waiter)
        try:
            item = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # Handed an item, then cancelled before it could run: the item is not this caller's to lose.
                handed = waiter.result()
                if handed is not _EXPIRED:
                    self._hand_on(handed)
            else:
                waiter.cancel()
                self._forget(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if item is _EXPIRED:
            raise Empty()
        return item

    def _expire(self, waiter: asyncio.Future[Any]) -> None:
        if not waiter.done():
            waiter.set_result(_EXPIRED)
            self._forget(waiter)

    def _forget(self, waiter: asyncio.Future[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    def _hand_on(self, item: Any) -> None:
        """``put``, but an item that was already handed out is kept even past ``maxsize``: the pool counted it as
        checked out, and no one but the queue can give it back now (the pool closes overflow on later puts)."""
        try:
            self.put(item)
        except Full:
            self._idle.append(item)


class FairAsyncQueuePool(AsyncAdaptedQueuePool):
    """``AsyncAdaptedQueuePool`` whose callers get connections in the order they asked (``FairAsyncQueue``).

    Everything else is SQLAlchemy's: size and overflow, ``pool_timeout`` (``sqlalchemy.exc.TimeoutError``),
    recycling, invalidation, events, ``status()``, ``checkedout()``. ``create_engine`` uses it for PostgreSQL.
    """

    _queue_class = FairAsyncQueue


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
