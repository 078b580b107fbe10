"""What each contender says to PostgreSQL per request: ``python -m bench.roundtrips [--contenders abcd]``.

A proxy between the contender (gunicorn, 2 workers) and PostgreSQL reads the frontend side of the wire
protocol and counts, per request, the round trips (a simple ``Query``, a ``Sync`` or a ``Flush`` ends one: the
client then waits for the server) and the statements run (simple queries, and the statement each ``Bind`` executes).
Requests are sent one at a time after a warm-up, so every connection's statements are already prepared.
This is the evidence for "pre-ping adds round trips" and the like; the numbers do not depend on load.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import struct
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from bench import seed
from bench.harness import SMALL_ROWS, Server, contenders, free_port

_UNTYPED_CODES = {80877103, 80877104}  # SSLRequest, GSSENCRequest: another untyped message follows


def _shape(sql: str) -> str:
    """One line, literals replaced by ``?``: psycopg2 inlines parameters into every statement's text."""
    sql = re.sub(r"'(?:[^']|'')*'(?:::\w+)?", "?", " ".join(sql.split()))
    return re.sub(r"(?<![\w$])\d+(?:\.\d+)?", "?", sql)


class WireCounter:
    """A forwarding proxy that counts frontend messages; runs its own event loop in a thread."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.roundtrips = 0
        self.statements: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> WireCounter:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def reset(self) -> None:
        with self._lock:
            self.roundtrips = 0
            self.statements.clear()

    async def _listen(self) -> None:
        await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        prepared: dict[str, str] = {}

        async def pump_back() -> None:
            try:
                while data := await up_reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            finally:
                writer.close()

        back = asyncio.ensure_future(pump_back())
        try:
            started = False
            while True:
                if not started:
                    head = await reader.readexactly(8)
                    length, code = struct.unpack("!ii", head)
                    body = await reader.readexactly(length - 8)
                    up_writer.write(head + body)
                    started = code not in _UNTYPED_CODES
                    continue
                head = await reader.readexactly(5)
                kind, length = head[:1], struct.unpack("!i", head[1:])[0]
                body = await reader.readexactly(length - 4)
                up_writer.write(head + body)
                await up_writer.drain()
                self._count(kind, body, prepared)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            up_writer.close()
            back.cancel()

    def _count(self, kind: bytes, body: bytes, prepared: dict[str, str]) -> None:
        with self._lock:
            if kind == b"Q":
                self.roundtrips += 1
                self.statements[_shape(body.rstrip(b"\0").decode(errors="replace"))] += 1
            elif kind in (b"S", b"H"):
                # Sync, and Flush: asyncpg prepares with Parse, Describe and Flush, then waits for the answer.
                self.roundtrips += 1
            elif kind == b"P":
                raw_name, query = body.split(b"\0")[:2]
                prepared[raw_name.decode()] = " ".join(query.decode(errors="replace").split())
            elif kind == b"B":
                statement = body.split(b"\0")[1].decode()
                self.statements[prepared.get(statement, f"<prepared {statement}>")] += 1


def measure(server: Server, counter: WireCounter, method: str, path: str, n: int, body: str | None) -> str:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:

        def once() -> None:
            headers = {"content-type": "application/json"}
            response = client.request(method, path, content=body, headers=headers if body else None)
            response.raise_for_status()

        for _ in range(200):  # every pooled connection of both workers prepares its statements
            once()
        counter.reset()
        for _ in range(n):
            once()
    with counter._lock:
        lines = [f"  {counter.roundtrips / n:.2f} round trips per request; statements per request:"]
        lines += [f"    {count / n:5.2f}  {text[:110]}" for text, count in counter.statements.most_common()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.roundtrips", description=__doc__)
    parser.add_argument("--contenders", default="abcd")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--productos-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    specs = contenders(dict(pair.split("=", 1) for pair in args.productos_env))
    workdir = Path(tempfile.mkdtemp(prefix="productos-roundtrips-"))
    with seed.scratch_database(workdir, SMALL_ROWS, "bench_rt") as url:
        parsed = make_url(url)
        with WireCounter((parsed.host or "127.0.0.1", parsed.port or 5432)) as counter:
            proxied = parsed.set(port=counter.port).render_as_string(hide_password=False)
            for key in args.contenders:
                contender = specs[key]
                with Server(contender, proxied, workdir) as server:
                    for scenario in contender.small:
                        if scenario.key == "list_50" and key == "e":
                            continue
                        body = scenario.wrk_args[2] if scenario.method == "POST" else None
                        print(f"({key}) {contender.name}: {scenario.method} {scenario.first_path}")
                        print(measure(server, counter, scenario.method, scenario.first_path, args.requests, body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
