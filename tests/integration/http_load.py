"""A small HTTP/1.1 load generator on raw asyncio streams: ``concurrency`` keep-alive clients, each sending one
request after another until told to stop, counting every answer by status and every failure by kind.

wrk is not installed in CI; httpx would spend most of the CPU this one leaves to the servers under test. A
failure is anything but a complete response: a refused or reset connection, a connection closed before or in
the middle of a response. Nothing is retried, so every one of them counts.

    python -m tests.integration.http_load http://127.0.0.1:8000/health/live -c 256 -d 10
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    """What a run saw: statuses of complete responses, failures by kind, and each response's latency (s)."""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    #: Latencies of the 200 responses alone.
    ok_latencies: list[float] = field(default_factory=list)
    connections: int = 0
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    def count(self, statuses: Sequence[int]) -> int:
        return sum(n for status, n in self.statuses.items() if status in statuses)

    def percentile(self, p: float, *, ok_only: bool = False) -> float:
        latencies = self.ok_latencies if ok_only else self.latencies
        if not latencies:
            return float("nan")
        ordered = sorted(latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def summary(self) -> str:
        rate = self.requests / self.seconds if self.seconds else 0.0
        ok_rate = self.statuses[200] / self.seconds if self.seconds else 0.0
        return (
            f"{self.requests} requests in {self.seconds:.1f} s ({rate:.0f}/s, {ok_rate:.0f}/s 200) on "
            f"{self.connections} connections; statuses {dict(sorted(self.statuses.items()))}; failures "
            f"{dict(self.errors)}; p50 {self.percentile(50) * 1000:.1f} ms, p99 {self.percentile(99) * 1000:.1f} ms "
            f"(200s: p50 {self.percentile(50, ok_only=True) * 1000:.1f} ms, "
            f"p99 {self.percentile(99, ok_only=True) * 1000:.1f} ms)"
        )


class _Response:
    __slots__ = ("close", "retry_after", "status")

    def __init__(self, status: int, close: bool, retry_after: float = 0.0) -> None:
        self.status = status
        self.close = close
        self.retry_after = retry_after


async def _read_response(reader: asyncio.StreamReader, method: str) -> _Response:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    close = "close" in headers.get("connection", "").lower() or parts[0] == "HTTP/1.0"
    retry_after = float(headers["retry-after"]) if headers.get("retry-after", "").isdigit() else 0.0
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return _Response(status, close, retry_after)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    else:
        await reader.read()  # the body runs to the close
        close = True
    return _Response(status, close, retry_after)


async def run_load(
    url: str,
    *,
    concurrency: int,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    paths: Sequence[str] = (),
    timeout: float = 30.0,
    honor_retry_after: bool = False,
) -> LoadResult:
    """Send requests to ``url`` (or to its host with each of ``paths`` in turn) from ``concurrency`` clients
    until ``duration`` seconds have passed or ``stop`` is set.

    Each client keeps its connection alive, opens a new one when the server answers ``Connection: close`` or
    the connection fails, and never retries a request. With ``honor_retry_after`` a client told to retry
    later (``Retry-After``) waits that long before its next request, as a polite client would.
    """
    if duration is None and stop is None:
        raise ValueError("give a duration or a stop event")
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    targets = list(paths) or [parts.path or "/"]
    result = LoadResult()
    deadline = None if duration is None else time.monotonic() + duration

    def done() -> bool:
        return (stop is not None and stop.is_set()) or (deadline is not None and time.monotonic() >= deadline)

    async def client(n: int) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        sent = n
        while not done():
            path = targets[sent % len(targets)]
            sent += 1
            started = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                    result.connections += 1
                assert reader is not None
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: load\r\n\r\n".encode())
                response = await asyncio.wait_for(_read_response(reader, "GET"), timeout)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as exc:
                result.errors[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)  # a refused connection must not spin
                continue
            elapsed = time.perf_counter() - started
            result.latencies.append(elapsed)
            if response.status == 200:
                result.ok_latencies.append(elapsed)
            result.statuses[response.status] += 1
            if response.close:
                assert writer is not None
                writer.close()
                reader = writer = None
            if honor_retry_after and response.retry_after:
                await asyncio.sleep(response.retry_after)
        if writer is not None:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    result.seconds = time.monotonic() - started
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("-d", "--duration", type=float, default=10.0)
    parser.add_argument("--honor-retry-after", action="store_true")
    args = parser.parse_args(argv)
    load = run_load(
        args.url, concurrency=args.concurrency, duration=args.duration, honor_retry_after=args.honor_retry_after
    )
    result = asyncio.run(load)
    print(result.summary())


if __name__ == "__main__":
    main()
