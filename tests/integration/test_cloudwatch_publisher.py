"""``CloudWatchPublisher`` and the publishing loop against moto's server over HTTP, through a proxy that
counts the calls and throttles, fails or hangs on demand; and against an endpoint that is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from productos.domain.metrics_ports import MetricDatum, PublishError
from productos.infra.aws import AwsClients, AwsConfig
from productos.infra.aws.cloudwatch import CloudWatchPublisher
from productos.observability.publishing import Cumulative, Figures, PoolSample, PublishingLoop
from tests.integration.aws_fakes import AwsProxy
from tests.integration.cloudwatch_reads import cloudwatch
from tests.integration.cloudwatch_reads import statistics as read_statistics
from tests.integration.conftest import REGION, Aws, free_port

ASG = (("AutoScalingGroupName", "productos-asg"),)
PER_INSTANCE = (("AutoScalingGroupName", "productos-asg"), ("InstanceId", "i-0abc"))


@pytest.fixture
def proxy(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsProxy]:
    with AwsProxy(aws.endpoint) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL", running.url)
        yield running


@pytest.fixture
async def clients(proxy: AwsProxy) -> AsyncIterator[AwsClients]:
    # moto takes seconds to store a thousand datums: a read timeout for moto, not for CloudWatch.
    async with AwsClients(AwsConfig(region=REGION, connect_timeout=1, read_timeout=30, max_attempts=3)) as aws:
        yield aws


def statistics(aws: Aws, name: str, dimensions: tuple[tuple[str, str], ...] = ASG) -> dict[str, float]:
    return read_statistics(aws.endpoint, name, dimensions)


def latency(at: datetime, dimensions: tuple[tuple[str, str], ...] = ASG) -> MetricDatum:
    return MetricDatum(
        "RequestLatency", "Milliseconds", at, dimensions, values=(2.5, 7.5, 300.0), counts=(10, 5, 1),
        storage_resolution=1,
    )  # fmt: skip


async def test_values_and_counts_reach_cloudwatch(aws: Aws, proxy: AwsProxy, clients: AwsClients) -> None:
    publisher = CloudWatchPublisher(await clients.client("cloudwatch"), "Productos")
    now = datetime.now(UTC).replace(microsecond=0)
    await publisher.publish([latency(now), latency(now, PER_INSTANCE)])
    stats = statistics(aws, "RequestLatency")
    assert stats["SampleCount"] == 16  # the counts, not the number of values
    assert stats["Sum"] == pytest.approx(10 * 2.5 + 5 * 7.5 + 300)
    assert (stats["Minimum"], stats["Maximum"]) == (2.5, 300.0)
    metrics = cloudwatch(aws.endpoint).list_metrics(Namespace="Productos")["Metrics"]
    listed = {(m["MetricName"], tuple((d["Name"], d["Value"]) for d in m["Dimensions"])) for m in metrics}
    assert listed == {("RequestLatency", ASG), ("RequestLatency", PER_INSTANCE)}
    assert len(proxy.of("PutMetricData")) == 1


async def test_a_backlog_goes_in_calls_of_at_most_1000_datums_gzipped(
    aws: Aws, proxy: AwsProxy, clients: AwsClients
) -> None:
    publisher = CloudWatchPublisher(await clients.client("cloudwatch"), "Productos")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    data = [
        MetricDatum("RequestCount", "Count", start + timedelta(seconds=i), PER_INSTANCE, value=1.0) for i in range(1050)
    ]
    await publisher.publish(data)
    calls = proxy.of("PutMetricData")
    assert [len([k for k in c.form if k.endswith(".MetricName")]) for c in calls] == [1000, 50]
    assert [c.encoding for c in calls] == ["gzip", "gzip"]  # each body is over 10 KiB
    assert all(c.answer == 200 for c in calls)
    assert statistics(aws, "RequestCount", PER_INSTANCE)["Sum"] == 1050


async def test_a_small_step_is_not_compressed(proxy: AwsProxy, clients: AwsClients) -> None:
    publisher = CloudWatchPublisher(await clients.client("cloudwatch"), "Productos")
    await publisher.publish([latency(datetime.now(UTC))])
    assert [c.encoding for c in proxy.of("PutMetricData")] == [""]


async def test_throttling_is_retried_with_backoff(aws: Aws, proxy: AwsProxy, clients: AwsClients) -> None:
    publisher = CloudWatchPublisher(await clients.client("cloudwatch"), "Productos")
    proxy.throttle(2)
    await publisher.publish([latency(datetime.now(UTC))])
    calls = proxy.of("PutMetricData")
    assert [c.answer for c in calls] == [400, 400, 200]
    assert calls[2].at - calls[0].at > 0.01  # backed off between attempts
    assert statistics(aws, "RequestLatency")["SampleCount"] == 16


async def test_5xx_is_retried(aws: Aws, proxy: AwsProxy, clients: AwsClients) -> None:
    publisher = CloudWatchPublisher(await clients.client("cloudwatch"), "Productos")
    proxy.unavailable(2)
    await publisher.publish([latency(datetime.now(UTC))])
    assert [c.answer for c in proxy.of("PutMetricData")] == [503, 503, 200]


async def test_throttling_beyond_the_attempts_is_a_publish_error(proxy: AwsProxy, clients: AwsClients) -> None:
    publisher = CloudWatchPublisher(await clients.client("cloudwatch"), "Productos")
    proxy.throttle(3)
    with pytest.raises(PublishError, match="Throttling") as caught:
        await publisher.publish([latency(datetime.now(UTC))])
    assert caught.value.sent == 0
    assert len(proxy.of("PutMetricData")) == 3  # PRODUCTOS_AWS_MAX_ATTEMPTS


async def test_an_endpoint_that_is_down_fails_fast(monkeypatch: pytest.MonkeyPatch, aws: Aws) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    async with AwsClients(AwsConfig(region=REGION, connect_timeout=1, read_timeout=2)) as down:
        publisher = CloudWatchPublisher(await down.client("cloudwatch"), "Productos")
        started = time.monotonic()
        with pytest.raises(PublishError, match="EndpointConnectionError"):
            await publisher.publish([latency(datetime.now(UTC))])
    assert time.monotonic() - started < 5


# --- the loop over the real adapter ---------------------------------------------------------------------


class Traffic:
    def __init__(self) -> None:
        self.count = 0.0

    def figures(self) -> Figures:
        return Figures(Cumulative(((0.005, self.count), (float("inf"), self.count)), self.count * 0.002, self.count))

    def pool(self) -> PoolSample:
        return PoolSample(3, 10)


async def dims() -> list[tuple[tuple[str, str], ...]]:
    return [ASG, PER_INSTANCE]


async def test_through_an_outage_the_buffer_holds_drops_the_oldest_and_says_so(
    aws: Aws, proxy: AwsProxy, clients: AwsClients
) -> None:
    traffic = Traffic()
    loop = PublishingLoop(
        CloudWatchPublisher(await clients.client("cloudwatch"), "Productos"),
        traffic, dims, interval=1, max_buffer=60, sample_every=0.5, flush_timeout=3,
    )  # fmt: skip
    await loop.start()
    await asyncio.sleep(1.5)
    proxy.hang()  # CloudWatch stops answering (read timeouts, then the loop backs off)
    hung_at = time.time()
    traffic.count += 50
    for _ in range(100):
        if loop.dropped_total:
            break
        await asyncio.sleep(0.2)
    assert loop.dropped_total > 0 and loop.buffered <= 60
    proxy.release()  # the call held during the outage fails and its datums rejoin the buffer: more drops
    for _ in range(150):
        if loop.buffered == 0 and statistics(aws, "MetricsDropped").get("Sum", 0) >= loop.dropped_total:
            break
        await asyncio.sleep(0.2)
    dropped = loop.dropped_total
    await loop.stop()
    assert statistics(aws, "MetricsDropped")["Sum"] == dropped == loop.dropped_total
    # Only the oldest went: what was counted after the outage began still arrived.
    calls_after = proxy.of("PutMetricData", since=hung_at)
    assert any(c.answer == 200 for c in calls_after)
    assert statistics(aws, "RequestCount")["Sum"] == 50


async def test_shutdown_with_cloudwatch_hung_ends_within_the_flush_timeout(
    proxy: AwsProxy, clients: AwsClients
) -> None:
    loop = PublishingLoop(
        CloudWatchPublisher(await clients.client("cloudwatch"), "Productos"),
        Traffic(), dims, interval=1, flush_timeout=1.0,
    )  # fmt: skip
    await loop.start()
    await asyncio.sleep(1.2)
    proxy.hang()
    started = time.monotonic()
    await loop.stop()
    assert time.monotonic() - started < 1.5
