"""A read replica's state, sampled in the background: one short query a second, each within a timeout.

The lag is PostgreSQL's own view from the standby: ``now() - pg_last_xact_replay_timestamp()``, the age of the
last transaction it has replayed. That age also grows while the primary is idle, with nothing to replay, so a
standby that has replayed all the WAL it has received (``pg_last_wal_replay_lsn() >=
pg_last_wal_receive_lsn()``) counts as caught up: lag 0. A server no longer in recovery (``pg_is_in_recovery()``
false: promoted) has no lag either, and still serves reads.

A sample that fails (the server down, a refused login) or does not answer within its timeout makes the replica
``unavailable``; the next one that succeeds makes it ``connected`` (or ``lagging``) again. A sample abandoned at its
deadline is cancelled and left to clean up in the background (its connection is terminated, never closed
gracefully), so a hung replica never delays the next sample, and no two samples of one replica ever overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from productos.domain.errors import DatabaseUnavailableError
from productos.infra.db.driver import DriverConnection
from productos.infra.db.replica import ReadReplica, ReplicaState

__all__ = ["LAG_QUERY", "SAMPLE_INTERVAL", "SAMPLE_TIMEOUT", "sample_replica", "watch_replica"]

logger = logging.getLogger(__name__)

#: Seconds between two samples of the replica's state.
SAMPLE_INTERVAL = 1.0
#: Seconds a sample may take (a checkout, maybe a login, and one query) before the replica counts as unavailable.
SAMPLE_TIMEOUT = 1.0

#: Whether the server is in recovery, and its lag in seconds (0 when caught up or promoted; NULL: unknown).
LAG_QUERY = """\
SELECT pg_is_in_recovery() AS in_recovery,
       CASE
         WHEN NOT pg_is_in_recovery() THEN 0
         WHEN pg_last_wal_receive_lsn() IS NOT NULL
              AND pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn() THEN 0
         ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())
       END::float8 AS lag"""


async def _measure(replica: ReadReplica) -> tuple[bool, float | None]:
    conn = await DriverConnection.checkout(replica.engine)
    try:
        row = await conn.fetchrow(LAG_QUERY)
    finally:
        await conn.release()
    assert row is not None
    return bool(row["in_recovery"]), row["lag"]


class _Sampler:
    """Samples of one replica, one at a time; those abandoned at their deadline are kept until they end."""

    def __init__(self, replica: ReadReplica, timeout: float) -> None:
        self.replica = replica
        self.timeout = timeout
        self.abandoned: set[asyncio.Future[tuple[bool, float | None]]] = set()

    async def sample(self) -> ReplicaState:
        replica = self.replica
        if self.abandoned:
            # The previous sample is still being cancelled: the replica hangs; no second connection to it.
            replica.unreachable(f"no answer within {self.timeout:g} s")
            return replica.state
        probe = asyncio.ensure_future(_measure(replica))
        try:
            done, _ = await asyncio.wait((probe,), timeout=self.timeout)
        except BaseException:
            self._abandon(probe)
            raise
        if not done:
            self._abandon(probe)
            replica.unreachable(f"no answer within {self.timeout:g} s")
            return replica.state
        try:
            in_recovery, lag = probe.result()
        except DatabaseUnavailableError as exc:
            replica.unreachable(exc.reason or "unavailable")
        except Exception as exc:
            # Not the connection: the server refused the standby functions themselves (a role without EXECUTE on
            # them, a server that has none). Reads stay on the primary; the log says why.
            sqlstate = getattr(exc, "sqlstate", None) or ""
            replica.unreachable(f"the replication lag cannot be measured: {type(exc).__name__} {sqlstate}".strip())
        else:
            replica.record(in_recovery=in_recovery, lag=lag)
        return replica.state

    def _abandon(self, probe: asyncio.Future[tuple[bool, float | None]]) -> None:
        probe.cancel()
        self.abandoned.add(probe)
        probe.add_done_callback(self._forget)

    def _forget(self, probe: asyncio.Future[tuple[bool, float | None]]) -> None:
        self.abandoned.discard(probe)
        if not probe.cancelled():
            probe.exception()  # retrieved: an abandoned sample's failure is no one's to report

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sample()
            except Exception:  # never let the watch die: the replica would keep its last state forever
                logger.exception("sampling the read replica failed")
                self.replica.unreachable("the sample failed")


async def sample_replica(replica: ReadReplica, *, timeout: float = SAMPLE_TIMEOUT) -> ReplicaState:
    """Sample ``replica`` once, within ``timeout`` seconds, and record what it said: its new state."""
    return await _Sampler(replica, timeout).sample()


@contextlib.asynccontextmanager
async def watch_replica(
    replica: ReadReplica, *, interval: float = SAMPLE_INTERVAL, timeout: float = SAMPLE_TIMEOUT
) -> AsyncIterator[ReadReplica]:
    """Sample ``replica`` now, then every ``interval`` seconds in a background task, until the block exits.

    The first sample is taken before the block starts (within ``timeout``), so the replica serves reads from the
    first request on when it is there, and the first requests go to the primary when it is not.
    """
    sampler = _Sampler(replica, timeout)
    await sampler.sample()
    task = asyncio.create_task(sampler.run(interval), name="productos-replica-lag")
    try:
        yield replica
    finally:
        pending: list[asyncio.Future[Any]] = [task, *sampler.abandoned]
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
