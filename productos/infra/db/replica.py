"""Read replicas: which database a read-only unit of work reads from, and read-your-writes.

``DATABASE_READ_URL`` (an RDS read replica, an Aurora reader endpoint) gets an engine of its own beside the
primary's, with its own pool (``DB_POOL_SIZE`` + ``DB_MAX_OVERFLOW``, ``DB_POOLER`` and the session limits
as for ``DATABASE_URL``). A ``ReadReplica`` holds that engine and what the process knows of the server:

- ``connected``: it answered the last sample within its timeout, and its replication lag was at most
  ``DB_READ_MAX_LAG`` seconds (or it is no longer in recovery: promoted, it still serves reads). Read-only
  units of a factory given the replica (``MyUnitOfWork.factory(engine, replica=runtime.replica)``) read there.
- ``lagging``: it answers, but its lag is past ``DB_READ_MAX_LAG`` (or cannot be told): reads go to the primary
  until it catches up.
- ``unavailable``: the last sample failed or timed out, or a request could not reach it since: reads go to the
  primary until a sample succeeds again.

The samples run in the background, one a second (``productos.infra.db.replica_lag``), never on a request's
path; a request only reads the state.

Read-your-writes: once a unit of work that writes commits (an ``autocommit`` unit: once it starts), the
read-only units that follow in the same request read from the primary. The scope is one HTTP request
(``create_service`` opens one per request) or a ``read_your_writes()`` block; outside any, the rest of the
current context (a job, a script). Across requests nothing is promised: a client that writes and then reads in
its next request may read from the replica before the write has reached it, at most ``DB_READ_MAX_LAG`` seconds
late (README, "Read replicas").

No I/O here: the state, the routing decision and the scope.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Final, Literal

from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "CONNECTED",
    "LAGGING",
    "UNAVAILABLE",
    "ReadReplica",
    "ReplicaState",
    "classify",
    "note_write",
    "read_your_writes",
    "wrote_in_scope",
]

logger = logging.getLogger(__name__)

ReplicaState = Literal["connected", "lagging", "unavailable"]
CONNECTED: Final = "connected"
LAGGING: Final = "lagging"
UNAVAILABLE: Final = "unavailable"


class _Writes:
    """One scope's record of whether it wrote: a mutable object, so that a write in a child task (which runs in a
    copy of the request's context) is seen by the request's later reads too."""

    __slots__ = ("wrote",)

    def __init__(self, wrote: bool = False) -> None:
        self.wrote = wrote


_SCOPE: ContextVar[_Writes | None] = ContextVar("productos_read_your_writes", default=None)


def note_write() -> None:
    """Record that the current scope has written: its later read-only units read from the primary.

    Units of work call it themselves (a transactional unit when it commits, an ``autocommit`` one when it
    starts); a repository that writes outside them may call it too.
    """
    scope = _SCOPE.get()
    if scope is None:
        # No request scope (a job, a script): the rest of this context reads its writes.
        _SCOPE.set(_Writes(wrote=True))
    else:
        scope.wrote = True


def wrote_in_scope() -> bool:
    """Whether the current scope (the request) has written."""
    scope = _SCOPE.get()
    return scope is not None and scope.wrote


@contextlib.contextmanager
def read_your_writes() -> Iterator[None]:
    """A scope of read-your-writes: inside it, read-only units after a write read from the primary; it starts
    with no write. ``create_service`` opens one per HTTP request; a job opens one per unit of its work."""
    token = _SCOPE.set(_Writes())
    try:
        yield
    finally:
        _SCOPE.reset(token)


def classify(*, in_recovery: bool, lag: float | None, max_lag: float) -> tuple[ReplicaState, str]:
    """The state of a replica that answered, and why it is not simply ``connected`` (``""`` when it is).

    A server no longer in recovery (promoted) serves reads; a standby does while its lag is known and at most
    ``max_lag`` seconds.
    """
    if not in_recovery:
        return CONNECTED, "promoted"
    if lag is None:
        return LAGGING, "replication lag unknown (nothing replayed yet)"
    if lag > max_lag:
        return LAGGING, f"replication lag {lag:.1f} s > DB_READ_MAX_LAG {max_lag:g} s"
    return CONNECTED, ""


class ReadReplica:
    """A read replica's engine and its state, as the last sample (or a failed request) left it.

    Args:
        engine: ``DATABASE_READ_URL``'s engine.
        max_lag: ``DB_READ_MAX_LAG``, seconds of replication lag past which reads go to the primary.
    """

    def __init__(self, engine: AsyncEngine, *, max_lag: float) -> None:
        if not max_lag > 0:
            raise ValueError("max_lag must be positive")
        self.engine = engine
        self.max_lag = max_lag
        self._state: ReplicaState = UNAVAILABLE
        self._lag: float | None = None
        self._in_recovery: bool | None = None
        self._reason = "not sampled yet"
        self._sampled_at: float | None = None

    @property
    def state(self) -> ReplicaState:
        """``connected``, ``lagging`` or ``unavailable`` (see the module)."""
        return self._state

    @property
    def lag(self) -> float | None:
        """The replication lag of the last sample, in seconds (0 once caught up, or promoted); ``None`` when it
        could not be measured."""
        return self._lag

    @property
    def in_recovery(self) -> bool | None:
        """Whether the server was a standby at the last sample (``False``: promoted); ``None`` before one."""
        return self._in_recovery

    @property
    def reason(self) -> str:
        """Why the replica is not ``connected`` (an error's type and SQLSTATE, or the lag): for logs."""
        return self._reason

    @property
    def sampled_at(self) -> float | None:
        """``time.monotonic()`` of the last sample that reached the server."""
        return self._sampled_at

    def should_read(self) -> bool:
        """Whether a read-only unit that starts now reads from the replica: it is ``connected`` and the current
        scope (the request) has not written."""
        if self._state != CONNECTED:
            return False
        scope = _SCOPE.get()
        return scope is None or not scope.wrote

    def record(self, *, in_recovery: bool, lag: float | None) -> ReplicaState:
        """Take a sample that reached the server: whether it is in recovery, and its lag (``None``: unknown)."""
        self._sampled_at = time.monotonic()
        self._in_recovery = in_recovery
        if lag is not None and (math.isnan(lag) or lag < 0):
            lag = 0.0  # clocks a little apart: a replay "in the future" is a replica that has caught up
        self._lag = lag
        state, reason = classify(in_recovery=in_recovery, lag=lag, max_lag=self.max_lag)
        if not in_recovery and (self._state != CONNECTED or self._reason != reason):
            logger.warning(
                "the read replica is not in recovery (promoted?): reads still go to it, writes to DATABASE_URL",
                extra={"replica": state},
            )
        return self._change(state, reason)

    def unreachable(self, reason: str) -> None:
        """The replica failed to answer (a sample, or a request's checkout or statement): reads go to the
        primary until a sample succeeds again. ``reason`` is for the logs: no host, URL or credentials."""
        self._change(UNAVAILABLE, reason or "unreachable")

    def _change(self, state: ReplicaState, reason: str) -> ReplicaState:
        previous, self._state, self._reason = self._state, state, reason
        if state == previous:
            return state
        extra = {"replica": state, "previous": previous, "lag_seconds": self._lag, "reason": reason or None}
        if state == CONNECTED:
            logger.info("the read replica serves reads", extra=extra)
        else:
            logger.warning("the read replica is %s: reads go to the primary", state, extra=extra)
        return state
