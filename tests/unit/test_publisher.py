"""The publishing loop and its pieces on fakes: ``RecordingPublisher``, a settable figures source."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from productos.domain.metrics_ports import (
    ASG_DIMENSION,
    DB_CONNECTIONS_IN_USE,
    DB_POOL_UTILIZATION,
    DB_QUERY_TIME,
    INSTANCE_DIMENSION,
    METRICS_DROPPED,
    REQUEST_COUNT,
    REQUEST_LATENCY,
    MetricDatum,
    MetricsPublisher,
)
from productos.observability.metrics import Metrics
from productos.observability.publishing import (
    Cumulative,
    Figures,
    FileLease,
    PoolSample,
    PublishingLoop,
    RegistrySource,
    distribution,
    resolve_dimension_sets,
    step_datums,
)
from productos.testing import RecordingPublisher

ASG = ((ASG_DIMENSION, "productos-asg"),)
PER_INSTANCE = ((ASG_DIMENSION, "productos-asg"), (INSTANCE_DIMENSION, "i-0abc"))
BOUNDS = (0.005, 0.01, 0.025, math.inf)


def histogram(*observations: float) -> Cumulative:
    """The cumulative histogram prometheus-client would hold after ``observations``."""
    buckets = tuple((le, float(sum(1 for o in observations if o <= le))) for le in BOUNDS)
    return Cumulative(buckets, float(sum(observations)), float(len(observations)))


class FakeSource:
    """Figures a test sets; counts reads."""

    def __init__(self) -> None:
        self.current = Figures()
        self.sample = PoolSample(0, 10)
        self.reads = 0

    def figures(self) -> Figures:
        self.reads += 1
        return self.current

    def pool(self) -> PoolSample:
        return self.sample

    def serve(self, *latencies: float) -> None:
        """Requests finished, each with one query of a tenth of its latency."""
        requests = self.current.requests
        before = [o for o in _observations(requests)]
        queries = [o for o in _observations(self.current.queries)]
        self.current = Figures(histogram(*before, *latencies), histogram(*queries, *(x / 10 for x in latencies)))


def _observations(h: Cumulative) -> list[float]:
    # Enough for these tests: every observation at its bucket's upper bound, the overflow at 0.05.
    out: list[float] = []
    previous = 0.0
    for le, n in h.buckets:
        out += [0.05 if math.isinf(le) else le] * int(n - previous)
        previous = n
    return out


async def dims() -> list[tuple[tuple[str, str], ...]]:
    return [ASG, PER_INSTANCE]


def loop_for(publisher: RecordingPublisher, source: FakeSource, **options: object) -> PublishingLoop:
    defaults: dict[str, object] = {"interval": 0.2, "sample_every": 0.05, "flush_timeout": 1.0}
    return PublishingLoop(publisher, source, dims, **{**defaults, **options})  # type: ignore[arg-type]


async def wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def total(publisher: RecordingPublisher, name: str, dimensions: tuple[tuple[str, str], ...] = ASG) -> float:
    found = 0.0
    for datum in publisher.named(name):
        if datum.dimensions == dimensions:
            found += datum.value if datum.value is not None else datum.sample_count
    return found


# --- pure pieces --------------------------------------------------------------------------------------------


def test_the_recording_publisher_satisfies_the_port() -> None:
    assert isinstance(RecordingPublisher(), MetricsPublisher)


def test_a_datum_takes_exactly_one_kind_of_figure() -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="exactly one"):
        MetricDatum("X", "Count", now, value=1.0, values=(1.0,))
    with pytest.raises(ValueError, match="exactly one"):
        MetricDatum("X", "Count", now)
    with pytest.raises(ValueError, match="differ"):
        MetricDatum("X", "Count", now, values=(1.0, 2.0), counts=(1.0,))
    with pytest.raises(ValueError, match="timezone"):
        MetricDatum("X", "Count", datetime(2026, 1, 1), value=1.0)


def test_a_histogram_step_becomes_bucket_midpoints_with_counts() -> None:
    step = histogram(0.001, 0.002, 0.007, 0.02, 0.02)
    values, counts = distribution(step, scale=1000.0)
    assert values == (2.5, 7.5, 17.5)  # ms: midpoints of (0, 5], (5, 10], (10, 25]
    assert counts == (2.0, 1.0, 2.0)


def test_the_overflow_bucket_gets_what_the_sum_leaves() -> None:
    step = histogram(0.001, 0.4, 0.6)  # two beyond the last finite bound (25 ms)
    values, counts = distribution(step, scale=1000.0)
    assert counts == (1.0, 2.0)
    assert values[0] == 2.5
    # (sum - 2.5 ms) / 2 = (1001 - 2.5) / 2 ms
    assert values[1] == pytest.approx((1001.0 - 2.5) / 2)


def test_a_step_is_the_difference_of_two_cumulative_readings_and_a_reset_counts_whole() -> None:
    before = histogram(0.001, 0.002)
    after = histogram(0.001, 0.002, 0.02)
    assert after.minus(before).count == 1
    assert after.minus(before).buckets[-1] == (math.inf, 1.0)
    assert histogram(0.02).minus(before) == histogram(0.02)  # the counters went back: all of it is new


def test_one_step_every_metric_for_every_dimension_set() -> None:
    delta = Figures(histogram(0.001, 0.02), histogram(0.0001, 0.0001, 0.002))
    pool = [PoolSample(2, 10), PoolSample(4, 10), PoolSample(4, 10)]
    datums = step_datums(
        start=1_800_000_000.0,
        interval=10,
        delta=delta,
        pool=pool,
        dropped=3,
        dimension_sets=[ASG, PER_INSTANCE],
    )
    by_key = {(d.name, d.dimensions): d for d in datums}
    assert len(datums) == 12
    for dimensions in (ASG, PER_INSTANCE):
        assert by_key[(REQUEST_COUNT, dimensions)].value == 2
        assert by_key[(REQUEST_COUNT, dimensions)].unit == "Count"
        assert by_key[(METRICS_DROPPED, dimensions)].value == 3
        latency = by_key[(REQUEST_LATENCY, dimensions)]
        assert latency.unit == "Milliseconds" and latency.sample_count == 2
        assert by_key[(DB_QUERY_TIME, dimensions)].sample_count == 3
        used = by_key[(DB_CONNECTIONS_IN_USE, dimensions)]
        assert (used.values, used.counts) == ((2.0, 4.0), (1.0, 2.0))
        utilization = by_key[(DB_POOL_UTILIZATION, dimensions)]
        assert utilization.unit == "Percent"
        assert (utilization.values, utilization.counts) == ((20.0, 40.0), (1.0, 2.0))
    assert {d.storage_resolution for d in datums} == {1}  # a 10 s step is high resolution
    assert {d.timestamp for d in datums} == {datetime.fromtimestamp(1_800_000_000, UTC)}


def test_a_quiet_minute_still_says_zero_requests_and_nothing_about_latency() -> None:
    datums = step_datums(
        start=0.0, interval=60, delta=Figures(), pool=[PoolSample(0, 0)], dropped=0, dimension_sets=[ASG]
    )
    names = {d.name for d in datums}
    assert REQUEST_COUNT in names and REQUEST_LATENCY not in names and DB_QUERY_TIME not in names
    assert DB_POOL_UTILIZATION not in names  # no pool reports a capacity: no utilization to speak of
    assert {d.storage_resolution for d in datums} == {60}


def test_figures_from_a_registry_leave_out_health_checks_and_scrapes() -> None:
    metrics = Metrics()
    for route, status in [("/productos", 200), ("/productos/{producto_id}", 404), ("/health", 200)]:
        metrics.request_started()
        metrics.request_finished("GET", route, status, 0.003)
    metrics.request_started()
    metrics.request_finished("GET", "/health/live", 200, 0.001)
    metrics.request_started()
    metrics.request_finished("GET", "/metrics", 200, 0.001)
    metrics.operation("postgresql", "SELECT", 0.0004)
    pool = metrics.pool("productos")
    pool.capacity(30)
    pool.connections("used", 3)
    pool.connections("idle", 2)

    source = RegistrySource(metrics.registry)
    figures = source.figures()
    assert figures.requests.count == 2
    assert figures.requests.sum == pytest.approx(0.006)
    assert figures.queries.count == 1
    assert source.pool() == PoolSample(3, 30)
    assert source.pool().utilization == pytest.approx(10.0)


async def test_dimensions_from_the_setting_without_metadata() -> None:
    assert await resolve_dimension_sets("productos-asg") == [ASG]
    assert await resolve_dimension_sets(None) == [()]


# --- the loop -----------------------------------------------------------------------------------------------


async def test_one_publish_call_per_step_whatever_the_traffic() -> None:
    publisher, source = RecordingPublisher(), FakeSource()
    loop = loop_for(publisher, source)
    await loop.start()
    await wait_for(lambda: len(publisher.calls) >= 2)
    calls_quiet = len(publisher.calls)
    steps_quiet = loop.steps
    for _ in range(5):
        source.serve(*[0.003] * 200)  # a thousand requests
        await asyncio.sleep(0.1)
    await loop.stop()
    busy_steps = loop.steps - steps_quiet
    assert len(publisher.calls) - calls_quiet <= busy_steps  # one call per step (the last flush included)
    assert all(len(call) <= 14 for call in publisher.calls)  # 7 metrics x 2 dimension sets, at most
    assert total(publisher, REQUEST_COUNT) == 1000
    assert total(publisher, REQUEST_COUNT, PER_INSTANCE) == 1000
    assert total(publisher, REQUEST_LATENCY) == 1000  # latency's sample count is the request count


async def test_steps_align_to_the_clock_and_are_timestamped_at_their_start() -> None:
    publisher, source = RecordingPublisher(), FakeSource()
    loop = loop_for(publisher, source, interval=0.5)
    await loop.start()
    await wait_for(lambda: len(publisher.calls) >= 3)
    await loop.stop()
    stamps = sorted({d.timestamp.timestamp() for d in publisher.datums})
    assert all(abs(s / 0.5 - round(s / 0.5)) < 1e-6 for s in stamps)


async def test_failed_publishing_is_kept_and_retried_in_order() -> None:
    publisher, source = RecordingPublisher(), FakeSource()
    publisher.fail(2)
    loop = loop_for(publisher, source)
    await loop.start()
    source.serve(0.001, 0.002, 0.003)
    await wait_for(lambda: loop.failures >= 2 and len(publisher.calls) >= 1, timeout=8)
    await loop.stop()
    assert total(publisher, REQUEST_COUNT) == 3
    stamps = [d.timestamp for d in publisher.datums]
    assert stamps == sorted(stamps)  # the backlog went first, oldest first
    assert loop.dropped_total == 0


async def test_a_partial_acceptance_is_not_sent_twice() -> None:
    publisher, source = RecordingPublisher(), FakeSource()
    publisher.fail(1, sent=5)
    loop = loop_for(publisher, source)
    await loop.start()
    source.serve(0.001)
    await wait_for(lambda: len(publisher.calls) >= 3, timeout=8)
    await loop.stop()
    keys = [(d.name, d.dimensions, d.timestamp) for d in publisher.datums]
    assert len(keys) == len(set(keys))
    assert total(publisher, REQUEST_COUNT) == 1


async def test_when_cloudwatch_stays_away_the_oldest_are_dropped_and_counted() -> None:
    publisher, source = RecordingPublisher(), FakeSource()
    publisher.block()  # every call hangs: an endpoint that never answers
    loop = loop_for(publisher, source, max_buffer=30, interval=0.1, sample_every=0.1)
    await loop.start()
    await wait_for(lambda: loop.dropped_total >= 20)
    assert loop.buffered <= 30
    publisher.unblock()
    await wait_for(lambda: any(d.value for d in publisher.named(METRICS_DROPPED)))
    await loop.stop()
    reported = total(publisher, METRICS_DROPPED) + total(publisher, METRICS_DROPPED, PER_INSTANCE)
    assert reported >= 20  # the drops are published, under their own name


async def test_stop_publishes_the_last_partial_step() -> None:
    publisher, source = RecordingPublisher(), FakeSource()
    loop = loop_for(publisher, source, interval=60)  # no step ends during the test
    await loop.start()
    await asyncio.sleep(0.1)
    source.serve(0.001, 0.002)
    await loop.stop()
    assert total(publisher, REQUEST_COUNT) == 2
    assert len(publisher.calls) == 1


async def test_stop_lets_a_call_in_flight_end_rather_than_send_its_datums_twice() -> None:
    publisher, source = RecordingPublisher(), FakeSource()
    loop = loop_for(publisher, source, flush_timeout=3.0)
    await loop.start()
    source.serve(0.004, 0.004)
    publisher.hold_answers()  # CloudWatch stores the next call's datums, and answers late
    await wait_for(lambda: publisher.held == 1)
    stopping = asyncio.create_task(loop.stop())
    await asyncio.sleep(0.2)
    assert not stopping.done()  # waiting for that answer, not cancelling the call
    publisher.release_answers()
    await stopping
    assert total(publisher, REQUEST_COUNT) == 2  # stored once: a cancelled call would be sent again
    assert loop.dropped_total == 0


@pytest.mark.parametrize("settle", [0.0, 0.3])
async def test_the_final_flush_waits_for_what_the_other_workers_counted_last(settle: float) -> None:
    publisher, source = RecordingPublisher(), FakeSource()
    loop = loop_for(publisher, source, interval=60, settle=settle)  # no regular step during the test
    await loop.start()
    await asyncio.sleep(0.05)
    stopping = asyncio.create_task(loop.stop())
    await asyncio.sleep(0.1)
    source.serve(0.004, 0.004, 0.004)  # another worker's last second reaches the shared files now
    await stopping
    assert total(publisher, REQUEST_COUNT) == (3 if settle else 0)


async def test_stop_returns_within_the_flush_timeout_when_nothing_answers() -> None:
    publisher, source = RecordingPublisher(), FakeSource()
    publisher.block()
    loop = loop_for(publisher, source, flush_timeout=0.3)
    await loop.start()
    await asyncio.sleep(0.5)
    source.serve(0.001)
    started = time.monotonic()
    await loop.stop()
    assert time.monotonic() - started < 0.6
    assert loop.dropped_total > 0 and loop.buffered == 0


async def test_publishing_never_waits_on_the_event_loop() -> None:
    """A hung publisher blocks none of the loop's other work: a request's coroutine runs on time."""
    publisher, source = RecordingPublisher(), FakeSource()
    publisher.block()
    loop = loop_for(publisher, source, interval=0.1, sample_every=0.02)
    await loop.start()
    worst = 0.0
    for _ in range(50):
        started = time.perf_counter()
        await asyncio.sleep(0)
        worst = max(worst, time.perf_counter() - started)
        await asyncio.sleep(0.01)
    await loop.stop()
    assert worst < 0.05


# --- one publisher per instance -----------------------------------------------------------------------------


def test_the_lease_has_one_holder(tmp_path: Path) -> None:
    first, second = FileLease(tmp_path / "lock"), FileLease(tmp_path / "lock")
    assert first.try_acquire()
    assert not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()


async def test_workers_share_one_publisher_and_a_successor_counts_nothing_twice(tmp_path: Path) -> None:
    publisher, source = RecordingPublisher(), FakeSource()
    options = {"lease_retry": 0.05, "state_path": tmp_path / "state.json"}
    first = loop_for(publisher, source, lease=FileLease(tmp_path / "lock"), **options)
    second = loop_for(publisher, source, lease=FileLease(tmp_path / "lock"), **options)
    await first.start()
    await wait_for(lambda: first.leader)
    await second.start()
    source.serve(*[0.001] * 7)
    await wait_for(lambda: total(publisher, REQUEST_COUNT) == 7)
    assert first.leader and not second.leader
    await first.stop()  # the holder goes (a worker recycled): the other takes over
    await wait_for(lambda: second.leader)
    source.serve(*[0.001] * 5)
    await wait_for(lambda: total(publisher, REQUEST_COUNT) == 12)
    await asyncio.sleep(0.5)
    await second.stop()
    assert total(publisher, REQUEST_COUNT) == 12
