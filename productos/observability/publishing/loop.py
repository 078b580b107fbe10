"""The publishing loop: once per step, the instance's figures as datums, sent off the request path.

Every worker runs one; it waits for the instance's lease (see ``lease``), and only the holder reads the
figures, builds each step's datums and sends them. Requests never wait on any of it: the loop is a
background task, file reads run in a thread.

Faults: the adapter retries throttling and 5xx (botocore); what still fails waits in a bounded buffer and is
retried with backoff, the oldest dropped and counted when it is full. On shutdown the holder publishes the last
partial step and flushes within ``flush_timeout``, then writes where it stopped, so a successor counts nothing
twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from productos.domain.metrics_ports import MetricDatum, MetricsPublisher, PublishError
from productos.observability.publishing.datums import step_datums
from productos.observability.publishing.dimensions import DimensionSet
from productos.observability.publishing.figures import Figures, PoolSample
from productos.observability.publishing.lease import FileLease
from productos.observability.publishing.sources import FiguresSource

logger = logging.getLogger(__name__)

STATE_FILE = "productos-publisher.json"

#: Datums kept while CloudWatch is unreachable: 12 per step, so about 14 hours of 60 s steps.
DEFAULT_MAX_BUFFER = 10_000
#: Seconds kept for the final flush: inside ``productos.entrypoints.worker.SHUTDOWN_MARGIN`` (2 s), which gunicorn's
#: graceful timeout leaves for the app's shutdown after in-flight requests finish.
DEFAULT_FLUSH_TIMEOUT = 1.5
MAX_BACKOFF = 60.0

DimensionsResolver = Callable[[], Awaitable[Sequence[DimensionSet]]]
PublisherFactory = Callable[[], Awaitable[MetricsPublisher]]


class PublishingLoop:
    """Publishes the instance's figures once per step, when this process holds the lease.

    Args:
        publisher: the adapter, or an async factory called once on taking the lease (so workers that never
            publish never create an AWS client).
        source: where the figures are read.
        dimensions: an async function giving the dimension sets, called once on taking the lease.
        interval: seconds per step (``PRODUCTOS_METRICS_INTERVAL``).
        lease: the instance-wide lock; ``None`` publishes unconditionally (a single process).
        state_path: where the holder writes the figures it has published up to, for its successor.
        max_buffer: datums kept while publishing fails; the oldest beyond it are dropped and counted.
        flush_timeout: seconds the final flush may take on shutdown.
        sample_every: seconds between samples of the pool's gauges within a step (default: a tenth of the
            step, at most one second).
        lease_retry: seconds between attempts to take the lease.
        clock: wall-clock seconds (step boundaries and timestamps).
    """

    def __init__(
        self,
        publisher: MetricsPublisher | PublisherFactory,
        source: FiguresSource,
        dimensions: DimensionsResolver,
        *,
        interval: float,
        lease: FileLease | None = None,
        state_path: str | Path | None = None,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        flush_timeout: float = DEFAULT_FLUSH_TIMEOUT,
        settle: float = 0.0,
        sample_every: float | None = None,
        lease_retry: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < interval <= 60:
            raise ValueError("interval must be in (0, 60] seconds")
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        self._publisher_or_factory = publisher
        self.publisher: MetricsPublisher | None = publisher if isinstance(publisher, MetricsPublisher) else None
        self._source = source
        self._resolve_dimensions = dimensions
        self.interval = float(interval)
        self._lease = lease
        self._state_path = Path(state_path) if state_path is not None else None
        self.max_buffer = max_buffer
        self.flush_timeout = flush_timeout
        #: Seconds the final flush waits before its last reading, so that what the other workers counted
        #: reaches the shared files first (they write their sums once a second: ``metrics.FLUSH_INTERVAL``).
        self.settle = settle
        # At least ten samples a step (a one-second step would otherwise see one instant), at most one a second.
        self._sample_every = sample_every if sample_every is not None else min(1.0, self.interval / 10)
        self._lease_retry = lease_retry if lease_retry is not None else min(self.interval, 5.0)
        self._clock = clock
        self._buffer: deque[MetricDatum] = deque()
        self._wake = asyncio.Event()
        #: Set by ``stop()``: the sender finishes the call it is making, if any, and makes no other.
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._previous = Figures()
        self._samples: list[PoolSample] = []
        self._step_start: float | None = None
        self._dimension_sets: tuple[DimensionSet, ...] | None = None
        self._state_loaded = False
        #: Datums dropped since the last ``MetricsDropped`` datum was queued, and in all.
        self._dropped_unreported = 0
        self.dropped_total = 0
        self.steps = 0
        self.failures = 0

    @property
    def leader(self) -> bool:
        """Whether this process publishes: it holds the lease, or there is none."""
        return self._lease is None or self._lease.held

    @property
    def dimension_sets(self) -> tuple[DimensionSet, ...]:
        """The dimension sets resolved on taking the lease; empty before."""
        return self._dimension_sets or ()

    @property
    def buffered(self) -> int:
        """Datums waiting to be sent."""
        return len(self._buffer)

    async def start(self) -> None:
        """Start the background task: wait for the lease, then publish every step."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="productos-metrics-publishing")

    async def stop(self) -> None:
        """Stop; if this process publishes, send the last partial step and flush within ``flush_timeout``."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sender, self._sender = self._sender, None
        if not self.leader:
            if sender is not None:  # the lease went with a failure of the loop: nothing of ours to flush
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
            return
        if self.settle:
            # Every worker gets SIGTERM at once: requests another worker served in its last second are not in
            # the files yet. Within ``settle`` its periodic (or final) write puts them there.
            await asyncio.sleep(self.settle)
        try:
            async with asyncio.timeout(self.flush_timeout):
                if sender is not None:
                    # A call in flight may already have reached CloudWatch: cancelled, its datums would go back
                    # to the buffer and be sent twice. Let it end (within the same bound as the flush).
                    self._stopping.set()
                    self._wake.set()
                    await asyncio.wait({sender})  # neither cancels it on the deadline nor raises what it raised
                # Stopped before it was ready (a shutdown right after start): get ready, the requests counted.
                await self._prepare()
                now = self._clock()
                start = self._step_start
                if start is None:
                    start = math.floor(now / self.interval) * self.interval
                await self._emit(start, now, final=True)
                while self._buffer and await self._send_buffered():
                    pass
        except TimeoutError:
            pass
        except Exception:
            logger.exception("the final metrics flush failed")
        finally:
            if sender is not None and not sender.done():
                sender.cancel()  # what it was sending goes back to the buffer, counted below
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
            if self._buffer:
                logger.warning(
                    "metrics not published at shutdown: %d datapoints dropped (CloudWatch unreachable, slow)",
                    len(self._buffer),
                    extra={"dropped": len(self._buffer)},
                )
                self.dropped_total += len(self._buffer)
                self._buffer.clear()
            self._release()

    def _release(self) -> None:
        if self._lease is not None:
            self._lease.release()

    # The holder's work ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        # A lock another process holds: nothing in this process can signal its release, so poll it.
        while True:
            if self._lease is None or self._lease.try_acquire():
                break
            await asyncio.sleep(self._lease_retry)
        try:
            await self._lead()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("the metrics publisher stopped; this worker gives up the lease")
            self._release()

    async def _prepare(self) -> None:
        """Once per holder: the adapter, the dimensions, and where the previous holder stopped."""
        if self.publisher is None:
            factory: Any = self._publisher_or_factory
            self.publisher = await factory()
        if self._dimension_sets is None:
            self._dimension_sets = tuple(await self._resolve_dimensions())
        if not self._state_loaded:
            self._load_state()
            self._state_loaded = True

    async def _lead(self) -> None:
        await self._prepare()
        logger.info(
            "this worker publishes the instance's metrics",
            extra={
                "interval_s": self.interval,
                "namespace": self.publisher.namespace if self.publisher else None,
                "dimensions": [dict(d) for d in self.dimension_sets],
            },
        )
        self._sender = asyncio.create_task(self._send_loop(), name="productos-metrics-sender")
        now = self._clock()
        start = math.floor(now / self.interval) * self.interval
        self._step_start = start
        while True:
            end = start + self.interval
            while (now := self._clock()) < end:
                self._samples.append(await asyncio.to_thread(self._source.pool))
                await asyncio.sleep(max(0.0, min(self._sample_every, end - self._clock())))
            await self._emit(start, now)
            # Behind by more than a step (a suspended VM, a blocked loop): the next step starts now.
            start = end if now < end + self.interval else math.floor(now / self.interval) * self.interval
            self._step_start = start

    async def _emit(self, start: float, now: float, *, final: bool = False) -> None:
        if not self._samples:
            self._samples.append(await asyncio.to_thread(self._source.pool))
        current = await asyncio.to_thread(self._source.figures)
        datums = step_datums(
            start=start,
            interval=self.interval,
            delta=current.minus(self._previous),
            pool=self._samples,
            dropped=self._dropped_unreported,
            dimension_sets=self.dimension_sets,
        )
        self._samples = []
        self._dropped_unreported = 0
        self._previous = current
        self._buffer.extend(datums)
        self._trim()
        self._save_state()
        self.steps += 1
        if not final:
            self._wake.set()

    def _trim(self) -> None:
        excess = len(self._buffer) - self.max_buffer
        if excess > 0:
            for _ in range(excess):
                self._buffer.popleft()
            self._dropped_unreported += excess
            self.dropped_total += excess
            logger.warning("metrics buffer full: dropped the %d oldest datapoints", excess, extra={"dropped": excess})

    async def _send_loop(self) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            await self._wake.wait()
            self._wake.clear()
            while self._buffer and not self._stopping.is_set():
                if await self._send_buffered():
                    backoff = 0.0
                    continue
                backoff = min(MAX_BACKOFF, max(1.0, backoff * 2))
                # Backing off, unless stop() wants the final flush now.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff * random.uniform(0.5, 1.0)):
                        await self._stopping.wait()

    async def _send_buffered(self) -> bool:
        """Send what is buffered; on failure put back what was not accepted. ``True`` if all went."""
        assert self.publisher is not None
        batch = list(self._buffer)
        self._buffer.clear()
        sent = 0
        try:
            await self.publisher.publish(batch)
            sent = len(batch)
            return True
        except PublishError as exc:
            sent = exc.sent
            self.failures += 1
            logger.warning(
                "metrics not published, kept for a retry: %s",
                exc,
                extra={"buffered": len(batch) - sent + len(self._buffer)},
            )
            return False
        except Exception as exc:
            self.failures += 1
            logger.warning("metrics not published, kept for a retry: %s", type(exc).__name__)
            return False
        finally:
            # Also on cancellation (a shutdown mid-call): what was not accepted goes back, oldest first.
            self._buffer.extendleft(reversed(batch[sent:]))
            self._trim()

    # Hand-over to a successor ------------------------------------------------------------------------------

    def _load_state(self) -> None:
        if self._state_path is None:
            return
        try:
            data = json.loads(self._state_path.read_text())
        except FileNotFoundError:
            return  # the first holder since gunicorn started: every count so far is this step's
        except (OSError, ValueError):
            logger.warning("unreadable metrics publisher state; counting from now on")
            self._previous = self._source.figures()
            return
        self._previous = Figures.from_json(data.get("published", {}))
        self._dropped_unreported = int(data.get("dropped_unreported", 0))

    def _save_state(self) -> None:
        if self._state_path is None:
            return
        data = {
            "pid": os.getpid(),
            "published": self._previous.to_json(),
            "dropped_unreported": self._dropped_unreported,
        }
        tmp = self._state_path.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self._state_path)
        except OSError:
            logger.warning("cannot write the metrics publisher state", exc_info=True)
