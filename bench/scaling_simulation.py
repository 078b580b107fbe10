"""Scaling simulation: the ASG's DBPoolUtilization policy driven by what a real instance publishes.

One real instance (gunicorn, 2 workers, 2 + 2 pooled connections each, PostgreSQL behind a proxy that adds
50 ms each way, standing for query time, so that a few dozen requests a second fill the pool) publishes to
moto's CloudWatch every second (``PRODUCTOS_METRICS_INTERVAL=1``); each second stands for one minute of
the ASG's world. A rising then falling number of users works the whole group (each user: a request, a
think time, again); the real instance gets its share, ``users / instances in service``. Every step the
script reads the published ``DBPoolUtilization`` (Average, dimension ``AutoScalingGroupName``) back from
moto and applies target tracking as the policy ``productos aws scaling-policies`` prints would:

- desired = ceil(in service * utilization / target), target 80 %, between min 2 and max 10;
- scale out when 3 consecutive datapoints are above the target (the policy's high alarm), scale in when 15
  are below 90 % of it (the low alarm), never within the cooldowns (3 min out, 5 min in);
- a new instance serves after a 2-minute warm-up (launch, boot, health checks); one removed stops at once.

Writes ``bench/results/scaling_simulation.png`` (utilization and capacity over time) and ``.json`` (the
series). Needs PostgreSQL at ``DATABASE_URL_TEST`` (default ``postgresql://postgres@127.0.0.1:5432/test``).

    python -m bench.scaling_simulation            # ~4 minutes
    python -m bench.scaling_simulation --steps 60 --peak 120
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx

from bench.harness import REPO_ROOT, free_port
from bench.seed import scratch_database

RESULTS = Path(__file__).resolve().parent / "results"
ASG_NAME = "productos-sim-asg"
REGION = "us-east-1"


# --- the target-tracking rule -------------------------------------------------------------------------------


@dataclass
class TargetTracking:
    """The ASG side: target tracking on one metric, with alarms' datapoints, cooldowns, warm-up and bounds."""

    target: float = 80.0
    minimum: int = 2
    maximum: int = 10
    high_datapoints: int = 3
    low_datapoints: int = 15
    low_fraction: float = 0.9
    scale_out_cooldown: int = 3
    scale_in_cooldown: int = 5
    warmup: int = 2
    desired: int = 2
    #: Step at which each pending instance enters service.
    pending: list[int] = field(default_factory=list)
    in_service: int = 2
    last_out: int = -(10**6)
    last_in: int = -(10**6)
    history: deque[float] = field(default_factory=lambda: deque(maxlen=32))

    def step(self, now: int, metric: float | None) -> str:
        """Apply one datapoint (``None``: no data this step); returns what happened."""
        arrived = [s for s in self.pending if s <= now]
        self.pending = [s for s in self.pending if s > now]
        self.in_service += len(arrived)
        if metric is None:
            return "no data"
        self.history.append(metric)
        recent = list(self.history)
        proposed = min(self.maximum, max(self.minimum, math.ceil(self.in_service * metric / self.target)))
        high = len(recent) >= self.high_datapoints and all(m > self.target for m in recent[-self.high_datapoints :])
        low = len(recent) >= self.low_datapoints and all(
            m < self.target * self.low_fraction for m in recent[-self.low_datapoints :]
        )
        if high and proposed > self.desired and now - self.last_out >= self.scale_out_cooldown:
            added = proposed - self.desired
            self.pending += [now + self.warmup] * added
            self.desired = proposed
            self.last_out = now
            return f"scale out +{added}"
        if (
            low
            and proposed < self.desired
            and now - self.last_in >= self.scale_in_cooldown
            and now - self.last_out >= self.scale_in_cooldown
        ):
            removed = self.desired - proposed
            self.desired = proposed
            self.in_service = min(self.in_service, proposed)
            self.pending = self.pending[: max(0, proposed - self.in_service)]
            self.last_in = now
            self.history.clear()  # the next scale-in needs a fresh run of low datapoints
            return f"scale in -{removed}"
        return ""


def offered_load(step: int, steps: int, base: float, peak: float) -> float:
    """Users of the whole group: flat, a ramp up, a plateau, a ramp down, flat."""
    x = step / steps
    if x < 0.1:
        level = 0.0
    elif x < 0.4:
        level = (x - 0.1) / 0.3
    elif x < 0.6:
        level = 1.0
    elif x < 0.85:
        level = 1.0 - (x - 0.6) / 0.25
    else:
        level = 0.0
    return base + (peak - base) * level


# --- the instance -------------------------------------------------------------------------------------------


class LatencyProxy:
    """TCP proxy adding ``delay`` seconds each way (chunks keep their order; throughput is not limited)."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> LatencyProxy:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - self.loop.time()))
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((self.loop.time() + self.delay, data))
        finally:
            queue.put_nowait((0.0, b""))
            await sender


@contextmanager
def moto_server(workdir: Path) -> Iterator[str]:
    """moto's server in a process of its own: storing every latency value it is sent takes CPU that the load
    generator, in this process, must not wait for."""
    port = free_port()
    log = (workdir / "scaling-simulation-moto.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


@contextmanager
def instance(database_url: str, moto: str, workdir: Path, *, pool_size: int, overflow: int) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DATABASE_URL": database_url,
        "APP_HOST": "127.0.0.1",
        "APP_PORT": str(port),
        "WORKERS": "2",
        "LOG_LEVEL": "warning",
        "DB_POOL_SIZE": str(pool_size),
        "DB_MAX_OVERFLOW": str(overflow),
        # The proxy's delay applies to logins too (a dozen round trips): room for them.
        "DB_POOL_TIMEOUT": "10",
        "DB_CONNECT_TIMEOUT": "10",
        "PRODUCTOS_TRACING_ENABLED": "false",
        "PRODUCTOS_METRICS_PUBLISHER": "cloudwatch",
        "PRODUCTOS_METRICS_INTERVAL": "1",
        "PRODUCTOS_ASG_NAME": ASG_NAME,
        "AWS_ENDPOINT_URL": moto,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    command = [sys.executable, "-m", "gunicorn", "-c", "python:productos.gunicorn_conf", "productos.main:app"]
    log = (workdir / "scaling-simulation-gunicorn.log").open("wb")
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/productos/1", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the service did not start; see scaling-simulation-gunicorn.log")
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


# --- the run ------------------------------------------------------------------------------------------------


@dataclass
class Step:
    step: int
    users: float
    instance_users: int
    served: int
    errors: int
    utilization: float | None
    desired: int
    in_service: int
    action: str
    #: The step's datapoint as CloudWatch holds it after the run (it may have come too late for the rule).
    published: float | None = None


def _pool_query(cloudwatch: Any, start: datetime, seconds: int) -> dict[float, float]:
    answer = cloudwatch.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "pool",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "Productos",
                        "MetricName": "DBPoolUtilization",
                        "Dimensions": [{"Name": "AutoScalingGroupName", "Value": ASG_NAME}],
                    },
                    "Period": 1,
                    "Stat": "Average",
                },
            }
        ],
        StartTime=start,
        EndTime=start + timedelta(seconds=seconds),
    )
    result = answer["MetricDataResults"][0]
    return {t.timestamp(): float(v) for t, v in zip(result["Timestamps"], result["Values"], strict=True)}


def published_utilization(cloudwatch: Any, at: float, steps: int | None = None) -> Any:
    """The Average of the datapoint published for the step starting at ``at``; with ``steps``, every
    datapoint of the ``steps`` steps from ``at`` on, by start time."""
    start = datetime.fromtimestamp(at, UTC)
    if steps is not None:
        return _pool_query(cloudwatch, start, steps)
    return _pool_query(cloudwatch, start, 1).get(at)


async def drive(base_url: str, moto: str, args: argparse.Namespace) -> list[Step]:
    """Run the instance's share of the users (tasks, never waiting on the controller) and the ASG's rule.

    Closed-loop users (request, think, again) rather than a fixed arrival rate: an instance past its capacity
    slows its users down instead of piling up a backlog that would outlive the load, as behind an ALB.
    """
    cloudwatch = boto3.client(
        "cloudwatch", region_name=REGION, endpoint_url=moto,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    asg = TargetTracking(target=args.target)
    rows: list[Step] = []
    counts = {"served": 0, "errors": 0}
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:

        async def user() -> None:
            await asyncio.sleep(random.uniform(0, args.think))  # users arrive spread over a think time
            while True:
                try:
                    response = await client.get(f"/productos/{random.randint(1, 1000)}")
                    counts["served" if response.status_code == 200 else "errors"] += 1
                except httpx.HTTPError:
                    counts["errors"] += 1
                await asyncio.sleep(random.expovariate(1 / args.think))

        users: list[asyncio.Task[None]] = []
        start = float(math.ceil(time.time()) + 1)
        try:
            for step in range(args.steps):
                boundary = start + step
                await asyncio.sleep(max(0.0, boundary + 0.3 - time.time()))
                # The step that just ended was published at its end: read it back from CloudWatch (moto).
                utilization = None
                if step:
                    utilization = await asyncio.to_thread(published_utilization, cloudwatch, boundary - 1)
                    if utilization is None:  # the publishing worker is late (a busy machine): once more
                        await asyncio.sleep(max(0.0, boundary + 0.7 - time.time()))
                        utilization = await asyncio.to_thread(published_utilization, cloudwatch, boundary - 1)
                action = asg.step(step, utilization)
                total = offered_load(step, args.steps, args.base, args.peak)
                share = min(round(total / max(asg.in_service, 1)), args.max_instance_users)
                while len(users) < share:
                    users.append(asyncio.create_task(user()))
                while len(users) > share:
                    users.pop().cancel()
                served, errors = counts["served"], counts["errors"]
                counts["served"] = counts["errors"] = 0
                rows.append(Step(step, total, share, served, errors, utilization, asg.desired, asg.in_service, action))
                label = f"{utilization:5.1f} %" if utilization is not None else "   -   "
                print(
                    f"step {step:3d}  users {total:5.0f}  on this instance {share:3d}  served {served:4d}  "
                    f"utilization {label}  desired {asg.desired:2d}  in service {asg.in_service:2d} {action}",
                    flush=True,
                )
        finally:
            for task in users:
                task.cancel()
            await asyncio.gather(*users, return_exceptions=True)
        # The whole published series, once everything has arrived: what the dashboard would show.
        series = await asyncio.to_thread(published_utilization, cloudwatch, start - 1, len(rows))
        for row in rows:
            row.published = series.get(start + row.step - 1) if row.step else None
    return rows


def plot(rows: list[Step], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r.step for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, height_ratios=[3, 2])
    published = [r.published if r.published is not None else math.nan for r in rows]
    top.plot(steps, published, color="tab:blue", label="DBPoolUtilization published (Average, %)")
    late = [r.step for r in rows if r.step and r.utilization is None and r.published is not None]
    if late:
        top.scatter(late, [published[s] for s in late], marker="x", color="black", s=18, zorder=3,
                    label="arrived too late for the rule (busy machine)")  # fmt: skip
    top.axhline(args.target, color="tab:red", linestyle="--", label=f"target {args.target:g} %")
    top.axhline(args.target * 0.9, color="tab:red", linestyle=":", alpha=0.5, label="scale-in threshold (90 %)")
    top.set_ylim(0, 105)
    top.set_ylabel("utilization (%)")
    load = top.twinx()
    load.plot(steps, [r.users for r in rows], color="tab:gray", alpha=0.5, label="users of the whole group")
    load.set_ylabel("users (whole group)")
    lines = top.get_legend_handles_labels()[0] + load.get_legend_handles_labels()[0]
    labels = top.get_legend_handles_labels()[1] + load.get_legend_handles_labels()[1]
    top.legend(lines, labels, loc="upper left", fontsize=8)
    top.set_title("productos: target tracking on the published DBPoolUtilization (1 s steps stand for minutes)")
    bottom.step(steps, [r.desired for r in rows], where="post", color="tab:orange", label="desired capacity")
    bottom.step(steps, [r.in_service for r in rows], where="post", color="tab:green", label="in service")
    bottom.set_ylim(0, 11)
    bottom.set_yticks(range(0, 11, 2))
    bottom.axhline(2, color="black", linewidth=0.5, linestyle=":")
    bottom.axhline(10, color="black", linewidth=0.5, linestyle=":")
    bottom.set_ylabel("instances")
    bottom.set_xlabel("step (simulated minute)")
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=180, help="steps of one second (180)")
    parser.add_argument("--base", type=float, default=16.0, help="users at rest, whole group (16)")
    parser.add_argument("--peak", type=float, default=260.0, help="users at the peak, whole group (260)")
    parser.add_argument("--think", type=float, default=0.5, help="a user's mean think time, s (0.5)")
    parser.add_argument("--target", type=float, default=80.0, help="the policy's target, % (80)")
    parser.add_argument("--db-delay", type=float, default=0.03, help="seconds added each way to the DB (0.03)")
    parser.add_argument("--pool-size", type=int, default=2, help="DB_POOL_SIZE per worker (2)")
    parser.add_argument("--overflow", type=int, default=2, help="DB_MAX_OVERFLOW per worker (2)")
    parser.add_argument("--max-instance-users", type=int, default=80, help="cap on one instance's share (80)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the PNG and JSON go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"scaling-sim-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    from urllib.parse import urlsplit

    with scratch_database(workdir, rows=1000, label="scaling") as url:
        split = urlsplit(url)
        with LatencyProxy((split.hostname or "127.0.0.1", split.port or 5432), args.db_delay) as proxy:
            slow_url = url.replace(f"{split.hostname}:{split.port or 5432}", f"127.0.0.1:{proxy.port}")
            with (
                moto_server(workdir) as moto,
                instance(slow_url, moto, workdir, pool_size=args.pool_size, overflow=args.overflow) as base_url,
            ):
                rows = asyncio.run(drive(base_url, moto, args))
    png = args.out / "scaling_simulation.png"
    plot(rows, args, png)
    (args.out / "scaling_simulation.json").write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "steps": [asdict(r) for r in rows]}, indent=1)
    )
    peak = max(r.desired for r in rows)
    print(f"wrote {png} (peak desired capacity {peak}, final {rows[-1].desired})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
