"""Python calls per request, counted exactly: ``python -m bench.calls [--top 40] [APP[|ENV=V,...] ...]``.

Wall-clock and CPU figures on this shared 2-core machine move by ±10 % between runs, more than most single changes
to the request path are worth. The number of Python function calls a request makes does not move at all: it is
the profile (cProfile) of one app, in a process of its own, driven in-process (ASGI calls, no sockets, no server;
prometheus-client in multiprocess mode, as in a gunicorn worker, where productos batches its metrics) with
``GET /productos/1`` (``--request``: another, e.g. ``'POST /productos {"nombre":"x","precio":1}'``) on a scratch
database of 1,000 products. It leaves out what C code costs (asyncpg's
protocol, httptools, the kernel), so it says where the Python part of a request goes, not its time; bench.run
measures the time.

Each APP is ``module:attribute``, optionally followed by ``|`` and environment variables for that app, e.g.
``'productos.main:app|PRODUCTOS_ACCESS_LOG=false'``. The default compares productos with (c). ``--top N`` also
lists the N modules (``--by function``: functions) that make the most calls. ``--cpu`` also measures, without
the profiler, the process CPU time one request costs (µs; the best of 5 batches of 2,000 requests): this app's
Python and C together, not PostgreSQL's, and much steadier than req/s on a shared machine.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import seed
from bench.harness import SMALL_ROWS

DEFAULT_REQUEST = "GET /productos/1"
DEFAULT_APPS = ("productos.main:app", "bench.contenders.fastapi_asyncpg:app")
WARMUP = 300
REQUESTS = 1_000
CPU_BATCHES = 5
CPU_BATCH = 2_000


def _scope(state: dict[str, Any], request: str = DEFAULT_REQUEST) -> dict[str, Any]:
    method, target, body = _parse_request(request)
    path, _, query = target.partition("?")
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": dict(state),
    }


def _parse_request(request: str) -> tuple[str, str, bytes]:
    """``METHOD TARGET [BODY]`` (``POST /productos {"nombre": ...}``)."""
    method, target, *body = request.split(" ", 2)
    return method, target, body[0].encode() if body else b""


def _count(spec: str, by: str, top: int, cpu: bool, request: str = DEFAULT_REQUEST) -> dict[str, Any]:
    """In the child: profile ``REQUESTS`` requests to the app ``spec``."""
    import uvloop
    from asgi_lifespan import LifespanManager

    module, _, attribute = spec.partition(":")
    app = getattr(importlib.import_module(module), attribute)

    body = _parse_request(request)[2]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] not in (200, 201):
            raise RuntimeError(f"{spec} answered {message['status']}")

    async def run() -> pstats.Stats:
        async with LifespanManager(app) as manager:
            state = manager._state
            for _ in range(WARMUP):
                await app(_scope(state, request), receive, send)
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(REQUESTS):
                await app(_scope(state, request), receive, send)
            profile.disable()
            best = 0.0
            for _ in range(CPU_BATCHES if cpu else 0):
                started = time.process_time()
                for _ in range(CPU_BATCH):
                    await app(_scope(state, request), receive, send)
                spent = (time.process_time() - started) / CPU_BATCH * 1e6
                best = spent if not best else min(best, spent)
            return pstats.Stats(profile), best

    stats, cpu_us = uvloop.run(run())
    places: Counter[str] = Counter()
    for (filename, line, name), (_, calls, *_rest) in stats.stats.items():  # type: ignore[attr-defined]
        place = filename.split("site-packages/")[-1].split("python3.11/")[-1] if filename != "~" else name
        places[f"{place}:{line}({name})" if by == "function" else place] += calls
    return {
        "calls": stats.total_calls / REQUESTS,  # type: ignore[attr-defined]
        "cpu_us": cpu_us,
        "top": [(place, calls / REQUESTS) for place, calls in places.most_common(top)],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calls", description=__doc__)
    parser.add_argument("apps", nargs="*", default=list(DEFAULT_APPS), metavar="APP")
    parser.add_argument("--top", type=int, default=0, help="also list the N places that make the most calls")
    parser.add_argument("--by", choices=("module", "function"), default="module")
    parser.add_argument(
        "--request", default=DEFAULT_REQUEST, help=f"METHOD TARGET [JSON BODY] (default {DEFAULT_REQUEST!r})"
    )
    parser.add_argument("--cpu", action="store_true", help="also measure CPU µs per request, without the profiler")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        # The app's own stdout (its access log) is not this command's output.
        saved = os.dup(1)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        try:
            result = _count(args.child, args.by, args.top, args.cpu, args.request)
        finally:
            os.dup2(saved, 1)
        print(json.dumps(result))
        return 0
    with seed.scratch_database(Path(tempfile.mkdtemp(prefix="productos-calls-")), SMALL_ROWS, "calls") as url:
        for spec in args.apps:
            app, _, pairs = spec.partition("|")
            env = {**os.environ, "DATABASE_URL": url, "DB_POOL_SIZE": "2", "DB_MAX_OVERFLOW": "0"}
            # As in a gunicorn worker: prometheus-client's multiprocess mode, in which productos batches metrics.
            env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="productos-calls-metrics-")
            env.update(pair.split("=", 1) for pair in pairs.split(",") if pair)
            command = [sys.executable, "-m", "bench.calls", "--child", app, "--by", args.by, "--top", str(args.top)]
            command += ["--request", args.request, *(["--cpu"] if args.cpu else [])]
            child = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
            if child.returncode != 0:
                print(child.stderr[-3000:], file=sys.stderr)
                return 1
            result = json.loads(child.stdout.strip().splitlines()[-1])
            cpu = f"  {result['cpu_us']:6.0f} µs CPU" if args.cpu else ""
            print(f"{result['calls']:7.1f} Python calls per request{cpu}  {spec}")
            for place, calls in result["top"]:
                print(f"    {calls:7.1f}  {place}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
