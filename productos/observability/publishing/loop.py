"""Instance-wide CloudWatch metrics, published by one worker per instance, off the request path.

Under gunicorn every worker runs a ``PublishingLoop``; the one that holds an ``fcntl`` lock on a file in the
Prometheus multiprocess directory publishes, the others retry the lock every few seconds and take over when
the holder dies (the kernel releases a dead process' locks). The publisher reads the figures of every worker
from the multiprocess files, so the calls per instance per step stay one whatever the workers and the
request rate:

- ``RequestCount`` and ``RequestLatency`` (ms): the step's delta of ``http_server_request_duration_seconds``
  (health checks and ``/metrics`` scrapes left out, as the ALB's own ``RequestCount`` leaves them out),
  latency as ``Values``/``Counts`` (one value per histogram bucket) so CloudWatch computes percentiles.
- ``DBQueryTime`` (ms): the step's delta of ``db_client_operation_duration_seconds``, the same way.
- ``DBConnectionsInUse`` and ``DBPoolUtilization`` (%): ``db_client_connection_count{state=used}`` and
  ``used / db_client_connection_max`` summed over the live workers (``max`` is each pool's size plus its
  overflow), sampled every second of the step (ten times a step under 10 s) and sent as the distribution
  of the samples.
- ``MetricsDropped``: datapoints dropped because CloudWatch stayed unreachable longer than the buffer lasts.

Each goes out with ``AutoScalingGroupName`` (what the scaling policy reads) and again with
``AutoScalingGroupName`` and ``InstanceId``. Timestamps are the start of the step (steps align to the
clock: a 60 s step is a CloudWatch minute); steps under 60 s are high resolution.

Faults: the adapter retries throttling and 5xx (botocore); what still fails waits in a bounded buffer and is
retried with backoff, the oldest dropped and counted when it is full. Requests never wait on any of it: the
loop is a background task, file reads run in a thread. On shutdown the holder publishes the last partial step
and flushes within ``flush_timeout``, then writes where it stopped, so a successor counts nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import json
import logging
import math
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from productos.domain.metrics_ports import (
    ASG_DIMENSION,
    DB_CONNECTIONS_IN_USE,
    DB_POOL_UTILIZATION,
    DB_QUERY_TIME,
    INSTANCE_DIMENSION,
    METRICS_DROPPED,
    REQUEST_COUNT,
    REQUEST_LATENCY,
    UNITS,
    MetricDatum,
    MetricsPublisher,
    PublishError,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from productos.infra.aws.clients import AwsClients
    from productos.settings import Settings

logger = logging.getLogger(__name__)

HTTP_DURATION = "http_server_request_duration_seconds"
DB_DURATION = "db_client_operation_duration_seconds"
CONNECTION_COUNT = "db_client_connection_count"
CONNECTION_MAX = "db_client_connection_max"
#: Routes whose requests are not traffic: the ALB's health checks and Prometheus scrapes (and their subpaths).
EXCLUDED_ROUTES = ("/health", "/metrics")

LOCK_FILE = "productos-publisher.lock"
STATE_FILE = "productos-publisher.json"

#: Datums kept while CloudWatch is unreachable: 12 per step, so about 14 hours of 60 s steps.
DEFAULT_MAX_BUFFER = 10_000
#: Seconds kept for the final flush: inside ``productos.entrypoints.worker.SHUTDOWN_MARGIN`` (2 s), which gunicorn's
#: graceful timeout leaves for the app's shutdown after in-flight requests finish.
DEFAULT_FLUSH_TIMEOUT = 1.5
MAX_BACKOFF = 60.0


# --- figures read from Prometheus ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cumulative:
    """A histogram summed over its label sets: cumulative count per upper bound (``le``), sum and count."""

    buckets: tuple[tuple[float, float], ...] = ()
    sum: float = 0.0
    count: float = 0.0

    def minus(self, earlier: Cumulative) -> Cumulative:
        """The change since ``earlier``; everything, if the counters went back (a reset)."""
        before = dict(earlier.buckets)
        deltas = tuple((le, n - before.get(le, 0.0)) for le, n in self.buckets)
        if self.count < earlier.count or any(d < 0 for _, d in deltas):
            return self
        return Cumulative(deltas, self.sum - earlier.sum, self.count - earlier.count)

    def to_json(self) -> dict[str, Any]:
        return {
            "buckets": [[_le_text(le), n] for le, n in self.buckets],
            "sum": self.sum,
            "count": self.count,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cumulative:
        buckets = tuple((float(le), float(n)) for le, n in data.get("buckets", []))
        return cls(buckets, float(data.get("sum", 0.0)), float(data.get("count", 0.0)))


@dataclass(frozen=True)
class Figures:
    """The instance's counters at one moment: request and query durations, cumulative since start."""

    requests: Cumulative = field(default_factory=Cumulative)
    queries: Cumulative = field(default_factory=Cumulative)

    def minus(self, earlier: Figures) -> Figures:
        return Figures(self.requests.minus(earlier.requests), self.queries.minus(earlier.queries))

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests.to_json(), "queries": self.queries.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figures:
        return cls(Cumulative.from_json(data.get("requests", {})), Cumulative.from_json(data.get("queries", {})))


@dataclass(frozen=True)
class PoolSample:
    """Connections in use and the pools' capacity (size + overflow), summed over the live workers."""

    in_use: float = 0.0
    capacity: float = 0.0

    @property
    def utilization(self) -> float | None:
        """Percent of capacity in use; ``None`` when no pool reports a capacity."""
        return 100.0 * self.in_use / self.capacity if self.capacity > 0 else None


class FiguresSource(Protocol):
    """Where the loop reads the instance's figures; both methods block briefly (run in a thread)."""

    def figures(self) -> Figures: ...

    def pool(self) -> PoolSample: ...


def _le_text(le: float) -> str:
    return "+Inf" if math.isinf(le) else repr(le)


def _excluded(route: str, excluded: Sequence[str]) -> bool:
    return any(route == prefix or route.startswith(prefix.rstrip("/") + "/") for prefix in excluded)


def figures_from(families: Iterable[Any], excluded_routes: Sequence[str] = EXCLUDED_ROUTES) -> Figures:
    """``Figures`` from prometheus-client metric families (a registry's ``collect()`` or a multiprocess
    merge with ``accumulate=True``: the same shapes)."""
    found: dict[str, Cumulative] = {}
    for family in families:
        if family.name not in (HTTP_DURATION, DB_DURATION):
            continue
        buckets: dict[float, float] = {}
        total = count = 0.0
        for sample in family.samples:
            if family.name == HTTP_DURATION and _excluded(sample.labels.get("http_route", ""), excluded_routes):
                continue
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
        found[family.name] = Cumulative(tuple(sorted(buckets.items())), total, count)
    return Figures(found.get(HTTP_DURATION, Cumulative()), found.get(DB_DURATION, Cumulative()))


def pool_from(families: Iterable[Any]) -> PoolSample:
    in_use = capacity = 0.0
    for family in families:
        if family.name == CONNECTION_COUNT:
            in_use += sum(s.value for s in family.samples if s.labels.get("db_client_connection_state") == "used")
        elif family.name == CONNECTION_MAX:
            capacity += sum(s.value for s in family.samples)
    return PoolSample(max(in_use, 0.0), max(capacity, 0.0))


class MultiprocessSource:
    """Figures of every worker of the instance, from the Prometheus multiprocess directory."""

    def __init__(self, path: str | Path, *, excluded_routes: Sequence[str] = EXCLUDED_ROUTES) -> None:
        self.path = str(path)
        self.excluded_routes = tuple(excluded_routes)

    def _merge(self, pattern: str) -> Iterable[Any]:
        from prometheus_client.multiprocess import MultiProcessCollector

        files = glob.glob(os.path.join(self.path, pattern))
        return MultiProcessCollector.merge(files, accumulate=True) if files else ()  # type: ignore[no-untyped-call]

    def figures(self) -> Figures:
        return figures_from(self._merge("histogram_*.db"), self.excluded_routes)

    def pool(self) -> PoolSample:
        # ``livesum`` gauges: a dead worker's file is removed (gunicorn_conf's child_exit), so are its counts.
        return pool_from(self._merge("gauge_livesum_*.db"))


class RegistrySource:
    """Figures of one process, from its registry (a single process: ``uvicorn``, tests)."""

    def __init__(self, registry: CollectorRegistry, *, excluded_routes: Sequence[str] = EXCLUDED_ROUTES) -> None:
        self.registry = registry
        self.excluded_routes = tuple(excluded_routes)

    def figures(self) -> Figures:
        return figures_from(self.registry.collect(), self.excluded_routes)

    def pool(self) -> PoolSample:
        return pool_from(self.registry.collect())


# --- one step's datums --------------------------------------------------------------------------------------


def distribution(delta: Cumulative, *, scale: float = 1.0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A histogram's step as ``Values``/``Counts``: one value per non-empty bucket, its midpoint (times
    ``scale``). The overflow bucket's value is what the step's sum leaves for it, at least its lower bound."""
    values: list[float] = []
    counts: list[float] = []
    lower = 0.0
    previous = 0.0
    accounted = 0.0
    for le, cumulative in delta.buckets:
        n = cumulative - previous
        previous = cumulative
        if n > 0:
            if math.isinf(le):
                rest = (delta.sum - accounted) / n
                value = max(lower, rest)
            else:
                value = (lower + le) / 2
                accounted += value * n
            values.append(round(value * scale, 6))
            counts.append(n)
        if not math.isinf(le):
            lower = le
    return tuple(values), tuple(counts)


def sample_distribution(samples: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    tally: dict[float, float] = {}
    for sample in samples:
        value = round(sample, 4)
        tally[value] = tally.get(value, 0.0) + 1
    ordered = sorted(tally.items())
    return tuple(v for v, _ in ordered), tuple(c for _, c in ordered)


DimensionSet = tuple[tuple[str, str], ...]


def step_datums(
    *,
    start: float,
    interval: float,
    delta: Figures,
    pool: Sequence[PoolSample],
    dropped: int,
    dimension_sets: Sequence[DimensionSet],
) -> list[MetricDatum]:
    """The datums of one step (every metric, once per dimension set), timestamped at the step's start."""
    timestamp = datetime.fromtimestamp(start, UTC)
    resolution = 1 if interval < 60 else 60
    figures: list[tuple[str, dict[str, Any]]] = [
        (REQUEST_COUNT, {"value": delta.requests.count}),
        (METRICS_DROPPED, {"value": float(dropped)}),
    ]
    latency = distribution(delta.requests, scale=1000.0)
    if latency[0]:
        figures.append((REQUEST_LATENCY, {"values": latency[0], "counts": latency[1]}))
    queries = distribution(delta.queries, scale=1000.0)
    if queries[0]:
        figures.append((DB_QUERY_TIME, {"values": queries[0], "counts": queries[1]}))
    if pool:
        in_use = sample_distribution([s.in_use for s in pool])
        figures.append((DB_CONNECTIONS_IN_USE, {"values": in_use[0], "counts": in_use[1]}))
        utilization = [u for u in (s.utilization for s in pool) if u is not None]
        if utilization:
            percent = sample_distribution(utilization)
            figures.append((DB_POOL_UTILIZATION, {"values": percent[0], "counts": percent[1]}))
    return [
        MetricDatum(
            name=name,
            unit=UNITS[name],
            timestamp=timestamp,
            dimensions=dimensions,
            storage_resolution=resolution,
            **payload,
        )
        for dimensions in dimension_sets
        for name, payload in figures
    ]


# --- one publisher per instance -----------------------------------------------------------------------------


class FileLease:
    """An exclusive, non-blocking ``flock`` on ``path``: one holder, freed by the kernel if it dies."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


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
        return self._lease is None or self._lease.held

    @property
    def dimension_sets(self) -> tuple[DimensionSet, ...]:
        return self._dimension_sets or ()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def start(self) -> None:
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


# --- dimensions ---------------------------------------------------------------------------------------------


async def resolve_dimension_sets(
    asg_name: str | None,
    *,
    metadata: Any = None,
    autoscaling: Callable[[], Awaitable[Any]] | None = None,
) -> list[DimensionSet]:
    """``[(ASG,)]`` and ``[(ASG, InstanceId)]``, from ``PRODUCTOS_ASG_NAME`` or the instance's metadata.

    Args:
        asg_name: the configured ASG name (``PRODUCTOS_ASG_NAME``); wins over the metadata's tag.
        metadata: an ``InstanceMetadata`` client; ``None`` skips it.
        autoscaling: an async factory of an ``autoscaling`` client, asked for the instance's group when the
            metadata has an instance id but no tag (instance metadata tags off in the launch template).
    """
    identity = await metadata.identity() if metadata is not None else None
    instance_id = identity.instance_id if identity else None
    asg = asg_name or (identity.asg_name if identity else None)
    if asg is None and instance_id and autoscaling is not None:
        asg = await _asg_from_api(autoscaling, instance_id)
    sets: list[DimensionSet] = []
    if asg:
        sets.append(((ASG_DIMENSION, asg),))
    if instance_id:
        instance = (INSTANCE_DIMENSION, instance_id)
        sets.append(((ASG_DIMENSION, asg), instance) if asg else (instance,))
    if not asg:
        logger.warning(
            "no Auto Scaling group known (set PRODUCTOS_ASG_NAME, or enable instance metadata tags): the "
            "scaling policy's DBPoolUtilization is not published"
        )
    if not sets:
        sets.append(())
    return sets


async def _asg_from_api(autoscaling: Callable[[], Awaitable[Any]], instance_id: str) -> str | None:
    try:
        client = await autoscaling()
        answer = await client.describe_auto_scaling_instances(InstanceIds=[instance_id])
    except Exception as exc:
        logger.info("autoscaling:DescribeAutoScalingInstances failed (%s)", type(exc).__name__)
        return None
    for item in answer.get("AutoScalingInstances", []):
        return str(item["AutoScalingGroupName"])
    return None


# --- composition --------------------------------------------------------------------------------------------


@asynccontextmanager
async def open_metrics_publishing(
    settings: Settings,
    *,
    aws: AwsClients | None = None,
    source: FiguresSource | None = None,
    flush_timeout: float = DEFAULT_FLUSH_TIMEOUT,
) -> AsyncIterator[PublishingLoop | None]:
    """Run the publisher ``PRODUCTOS_METRICS_PUBLISHER`` selects for the app's life (``None`` when off).

    Args:
        settings: the service's settings.
        aws: the process' AWS clients (the CloudWatch client is created from them, once, by the holder).
        source: where figures come from; by default the Prometheus multiprocess directory (gunicorn with
            ``productos.gunicorn_conf``). Without one, pass a ``RegistrySource`` (a single process).
        flush_timeout: bound on the final flush at shutdown.
    """
    if settings.metrics_publisher == "none":
        yield None
        return
    from productos.observability.metrics import FLUSH_INTERVAL, multiprocess_dir

    directory = multiprocess_dir()
    if source is None and directory is None:
        logger.warning(
            "PRODUCTOS_METRICS_PUBLISHER=%s needs the workers' shared metrics: serve with `productos serve` "
            "(gunicorn -c python:productos.gunicorn_conf) or set PROMETHEUS_MULTIPROC_DIR; not publishing",
            settings.metrics_publisher,
        )
        yield None
        return
    if not settings.metrics_enabled:
        logger.warning("PRODUCTOS_METRICS_ENABLED=false: no metrics to publish")
        yield None
        return
    loop = PublishingLoop(
        _publisher_factory(settings, aws),
        source or MultiprocessSource(str(directory)),
        _dimensions_resolver(settings, aws),
        interval=settings.metrics_interval,
        lease=FileLease(Path(directory) / LOCK_FILE) if directory else None,
        state_path=Path(directory) / STATE_FILE if directory else None,
        flush_timeout=flush_timeout,
        # The other workers' last batched counts (written once a second) must reach the files first.
        settle=FLUSH_INTERVAL + 0.25 if directory else 0.0,
    )
    await loop.start()
    try:
        yield loop
    finally:
        await loop.stop()


def _publisher_factory(settings: Settings, aws: AwsClients | None) -> PublisherFactory:
    async def make() -> MetricsPublisher:
        if settings.metrics_publisher == "emf":
            from productos.infra.aws.emf import EmfPublisher

            return EmfPublisher(settings.cloudwatch_namespace)
        from productos.infra.aws.cloudwatch import CloudWatchPublisher

        if aws is None:
            raise RuntimeError("the CloudWatch publisher needs the process' AWS clients")
        return CloudWatchPublisher(await aws.client("cloudwatch"), settings.cloudwatch_namespace)

    return make


def _dimensions_resolver(settings: Settings, aws: AwsClients | None) -> DimensionsResolver:
    async def resolve() -> Sequence[DimensionSet]:
        from productos.infra.aws.imds import InstanceMetadata, metadata_disabled

        metadata = None if metadata_disabled() else InstanceMetadata()

        async def autoscaling() -> Any:
            assert aws is not None
            return await aws.client("autoscaling")

        return await resolve_dimension_sets(
            settings.asg_name,
            metadata=metadata,
            autoscaling=autoscaling if aws is not None else None,
        )

    return resolve
