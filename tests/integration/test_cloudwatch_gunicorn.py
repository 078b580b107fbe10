"""End-to-end: gunicorn (UvicornWorkers) on PostgreSQL publishing to moto's CloudWatch over HTTP, through a
proxy that counts the calls; the instance's identity from a metadata service started here.

What the ASG's scaling policy and the dashboard read must be there, with the right dimensions and figures
that match the traffic sent; one ``PutMetricData`` per step whatever the load and the workers; a successor
when the publishing worker dies; a final flush on shutdown; no request slower when CloudWatch hangs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import statistics as stats
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.integration.aws_fakes import AwsProxy, FakeImds, imds_values
from tests.integration.cloudwatch_reads import cloudwatch, statistics
from tests.integration.conftest import moto_post
from tests.integration.servers import Gunicorn

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ASG_NAME = "productos-asg"
INSTANCE = "i-0fedcba9876543210"
ASG = (("AutoScalingGroupName", ASG_NAME),)
PER_INSTANCE = (("AutoScalingGroupName", ASG_NAME), ("InstanceId", INSTANCE))
METRICS = {"DBPoolUtilization", "DBConnectionsInUse", "DBQueryTime", "RequestLatency", "RequestCount"}


@dataclass
class Site:
    """moto behind a counting proxy, a metadata service, and the service's environment to reach them."""

    moto: str
    proxy: AwsProxy
    imds: FakeImds
    workdir: Path
    database_url: str

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "PRODUCTOS_METRICS_PUBLISHER": "cloudwatch",
            "PRODUCTOS_METRICS_INTERVAL": "1",
            "PRODUCTOS_ASG_NAME": ASG_NAME,
            "AWS_ENDPOINT_URL": self.proxy.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": self.imds.url,
            "AWS_EC2_METADATA_DISABLED": "false",
            "AWS_CONFIG_FILE": str(self.workdir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "no-aws-credentials"),
            "PRODUCTOS_TRACING_ENABLED": "false",
            "DB_POOL_SIZE": "2",
            "DB_MAX_OVERFLOW": "3",
            "DB_STATEMENT_TIMEOUT": "30",
            # hold_connections() keeps requests waiting on a table lock for 2.5 s: longer than the default
            # lock timeout (which would answer them 409).
            "DB_LOCK_TIMEOUT": "10",
            **extra,
        }

    def stats(self, name: str, dimensions: tuple[tuple[str, str], ...] = ASG) -> dict[str, float]:
        return statistics(self.moto, name, dimensions)


@pytest.fixture
def site(moto_endpoint: str, workdir: Path, database_url: str) -> Iterator[Site]:
    moto_post(moto_endpoint, "/moto-api/reset")
    with AwsProxy(moto_endpoint) as proxy, FakeImds(imds_values(INSTANCE)) as imds:
        yield Site(moto_endpoint, proxy, imds, workdir, database_url)


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(every)


def publisher_pid(server: Gunicorn) -> int:
    directory = re.search(r'Prometheus multiprocess directory ([^\s"]+)', server.output())
    assert directory, server.output()
    lock = Path(directory.group(1)) / "productos-publisher.lock"
    return int(wait_until(lambda: lock.exists() and lock.read_text().strip()))


async def hold_connections(server: Gunicorn, database_url: str, requests: int, seconds: float) -> None:
    """``requests`` concurrent list requests, each holding a pooled connection for ``seconds``: they wait on a
    lock this test holds on the table."""
    locker = await asyncpg.connect(database_url)
    try:
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("LOCK TABLE productos IN ACCESS EXCLUSIVE MODE")
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            pending = [asyncio.create_task(client.get("/productos")) for _ in range(requests)]
            await asyncio.sleep(seconds)
            await transaction.commit()
            answers = await asyncio.gather(*pending)
        assert [a.status_code for a in answers] == [200] * requests
    finally:
        await locker.close()


async def test_published_metrics_match_the_traffic(site: Site) -> None:
    with Gunicorn(site.workdir, site.env(), workers=2) as server:
        await asyncio.to_thread(wait_until, lambda: site.proxy.of("PutMetricData"))
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            ids = []
            for i in range(20):
                created = await client.post("/productos", json={"nombre": f"p{i}", "precio": 1.5})
                assert created.status_code == 201
                ids.append(created.json()["id"])
            for i in range(30):
                assert (await client.get(f"/productos/{ids[i % 20]}")).status_code == 200
            for _ in range(10):
                assert (await client.get("/productos/999999")).status_code == 404
            for _ in range(5):  # not traffic: health checks and scrapes
                await client.get("/health")
                await client.get("/metrics")
        await hold_connections(server, site.database_url, requests=4, seconds=2.5)
        sent = 20 + 30 + 10 + 4

        await asyncio.to_thread(wait_until, lambda: site.stats("RequestCount").get("Sum") == sent)
        await asyncio.sleep(2.5)  # a couple more steps: nothing more may arrive

    listed = cloudwatch(site.moto).list_metrics(Namespace="Productos")["Metrics"]
    found = {(m["MetricName"], tuple((d["Name"], d["Value"]) for d in m["Dimensions"])) for m in listed}
    for name in METRICS | {"MetricsDropped"}:
        assert (name, ASG) in found, name
        assert (name, PER_INSTANCE) in found, name

    for dimensions in (ASG, PER_INSTANCE):
        assert site.stats("RequestCount", dimensions)["Sum"] == sent
        latency = site.stats("RequestLatency", dimensions)
        assert latency["SampleCount"] == sent  # one value per request: health checks and scrapes left out
        assert latency["Maximum"] >= 1000  # the four requests that waited 2.5 s on the lock
        assert 0 < latency["Minimum"] < 100
        queries = site.stats("DBQueryTime", dimensions)
        assert queries["SampleCount"] >= sent  # at least one statement per request (plus the pre-pings)
        in_use = site.stats("DBConnectionsInUse", dimensions)
        assert (in_use["Minimum"], in_use["Maximum"]) == (0, 4)
        utilization = site.stats("DBPoolUtilization", dimensions)
        # 4 in use of 2 workers x (DB_POOL_SIZE 2 + DB_MAX_OVERFLOW 3)
        assert (utilization["Minimum"], utilization["Maximum"]) == (0, 40.0)
        assert site.stats("MetricsDropped", dimensions)["Sum"] == 0

    # get_metric_statistics, as the console's graphs and the alarms read them (exact per-instance dimensions).
    now = datetime.now(UTC)
    answer = cloudwatch(site.moto).get_metric_statistics(
        Namespace="Productos",
        MetricName="RequestCount",
        Dimensions=[{"Name": k, "Value": v} for k, v in PER_INSTANCE],
        StartTime=now - timedelta(minutes=30),
        EndTime=now + timedelta(minutes=1),
        Period=3600,
        Statistics=["Sum"],
        Unit="Count",
    )
    assert sum(p["Sum"] for p in answer["Datapoints"]) == sent
    # Every step's datums in one call, each a high-resolution datum of both dimension sets.
    put = site.proxy.of("PutMetricData")
    assert all(c.answer == 200 for c in put)
    form = put[-1].form
    assert {form[k][0] for k in form if k.endswith("StorageResolution")} == {"1"}


def _measure_calls(server: Gunicorn, proxy: AwsProxy, seconds: float, load: int) -> tuple[int, int]:
    """PutMetricData calls during ``seconds`` (whole steps) while ``load`` clients hammer the service."""

    async def hammer(stop: float) -> int:
        done = 0
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:

            async def one() -> None:
                nonlocal done
                while time.time() < stop:
                    response = await client.get("/productos", params={"limit": 5})
                    assert response.status_code == 200
                    done += 1

            await asyncio.gather(*(one() for _ in range(load)))
        return done

    start = float(int(time.time()) + 1)  # on a step boundary
    time.sleep(start - time.time())
    stop = start + seconds
    served = asyncio.run(hammer(stop)) if load else 0
    time.sleep(max(0.0, stop - time.time()) + 0.6)  # the last step's call goes out just after the boundary
    return len(proxy.of("PutMetricData", since=start + 0.5, until=stop + 0.5)), served


@pytest.mark.parametrize("workers", [1, 4])
def test_calls_per_step_do_not_grow_with_load_or_workers(site: Site, workers: int) -> None:
    with Gunicorn(site.workdir, site.env(), workers=workers) as server:
        wait_until(lambda: len(site.proxy.of("PutMetricData")) >= 2)
        quiet, _ = _measure_calls(server, site.proxy, 6, load=0)
        busy, served = _measure_calls(server, site.proxy, 6, load=16)
    print(f"\n{workers} worker(s): PutMetricData calls in 6 steps: {quiet} idle, {busy} under {served} requests")
    assert served > 300
    assert 5 <= quiet <= 7 and 5 <= busy <= 7  # one per step: 6 steps, give or take one at the edges
    assert abs(busy - quiet) <= 1


async def test_a_successor_publishes_when_the_publishing_worker_dies(site: Site) -> None:
    with Gunicorn(site.workdir, site.env(), workers=2) as server:
        first = await asyncio.to_thread(publisher_pid, server)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            for _ in range(10):
                assert (await client.get("/productos")).status_code == 200
            await asyncio.to_thread(wait_until, lambda: site.stats("RequestCount").get("Sum") == 10)
            os.kill(first, signal.SIGKILL)
            killed_at = time.time()
            second = await asyncio.to_thread(wait_until, lambda: (p := publisher_pid(server)) != first and p)
            for _ in range(10):
                assert (await client.get("/productos")).status_code == 200
        await asyncio.to_thread(wait_until, lambda: site.stats("RequestCount").get("Sum") == 20)
        resumed = site.proxy.of("PutMetricData", since=killed_at)
        assert resumed and resumed[0].at - killed_at < 6  # the lease is retried every second (5 s at most)
        await asyncio.sleep(2)
    assert second != first
    assert site.stats("RequestCount")["Sum"] == 20  # the successor counted nothing twice


async def test_the_last_step_is_flushed_on_shutdown(site: Site) -> None:
    env = site.env(PRODUCTOS_METRICS_INTERVAL="60")  # no regular step needs to pass during the test
    with Gunicorn(site.workdir, env, workers=2) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            for _ in range(15):
                assert (await client.get("/productos")).status_code == 200
        started = time.monotonic()
        await asyncio.to_thread(server.stop, 30)
        stopped_in = time.monotonic() - started
    metrics_lines = [line for line in server.output().splitlines() if "metric" in line.lower()]
    assert site.stats("RequestCount")["Sum"] == 15, metrics_lines
    assert site.stats("RequestCount", PER_INSTANCE)["Sum"] == 15
    assert "datapoints dropped" not in server.output()
    assert stopped_in < 10


async def test_cloudwatch_hanging_slows_no_request_and_shutdown_stays_bounded(site: Site) -> None:
    env = site.env(PRODUCTOS_GRACEFUL_TIMEOUT="10", PRODUCTOS_AWS_READ_TIMEOUT="30")
    with Gunicorn(site.workdir, env, workers=2) as server:
        await asyncio.to_thread(wait_until, lambda: site.proxy.of("PutMetricData"))
        site.proxy.hang()
        hung_at = time.time()
        timings = []
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            for _ in range(200):
                started = time.perf_counter()
                assert (await client.get("/productos", params={"limit": 5})).status_code == 200
                timings.append(time.perf_counter() - started)
                await asyncio.sleep(0.02)
        attempts = [c for c in site.proxy.calls if c.at >= hung_at]
        started = time.monotonic()
        await asyncio.to_thread(server.stop, 30)
        stopped_in = time.monotonic() - started
    # The publisher kept trying (its calls hang in the proxy) ...
    assert site.proxy.of("PutMetricData", since=hung_at) == [] and attempts == []
    # ... and no request waited on it: each hung call lasts the 30 s read timeout, requests take milliseconds
    # (the bound on the slowest leaves room for a shared, busy test machine).
    assert max(timings) < 10.0, max(timings)
    assert stats.median(timings) < 0.1, stats.median(timings)
    assert stopped_in < 6  # within PRODUCTOS_GRACEFUL_TIMEOUT: the final flush gives up after 1.5 s
    assert "datapoints dropped" in server.output()


def test_emf_lines_on_stdout_one_document_per_step(site: Site) -> None:
    env = site.env(PRODUCTOS_METRICS_PUBLISHER="emf")
    with Gunicorn(site.workdir, env, workers=2) as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            for _ in range(12):
                assert client.get("/productos").status_code == 200
        time.sleep(2.5)
        server.stop(30)
    documents = [json.loads(line) for line in server.output().splitlines() if line.startswith('{"_aws"')]
    assert documents, server.output()[-2000:]
    stamps = [d["_aws"]["Timestamp"] for d in documents]
    assert len(stamps) - len(set(stamps)) <= 1  # one document per step (the final partial step may share one)
    assert sum(d["RequestCount"] for d in documents) == 12
    first = documents[0]["_aws"]["CloudWatchMetrics"][0]
    assert first["Namespace"] == "Productos"
    assert first["Dimensions"] == [["AutoScalingGroupName"], ["AutoScalingGroupName", "InstanceId"]]
    assert documents[0]["InstanceId"] == INSTANCE
    assert site.proxy.of("PutMetricData") == []  # EMF never calls the API
    assert any("DBPoolUtilization" in d for d in documents)
