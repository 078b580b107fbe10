"""What a pool checkout costs in a new greenlet per call and in a reused one: ``python -m bench.greenlets``.

SQLAlchemy runs its sync pool on asyncpg inside a greenlet: ``greenlet_spawn`` makes a new one for every call;
``productos.infra.db.greenlets.run_in_greenlet`` keeps them. This measures both side by side in one process,
alternated in rounds (the machine is shared and noisy), as process CPU time per call (µs; the best of the
rounds), for three calls:

- ``trivial``: a function that returns at once: the bridge alone;
- ``one await``: a function that awaits once inside (``await_``), as a checkout that must wait for a connection;
- ``checkout``: the pool's ``connect()`` and the connection's return, on productos' PostgreSQL engine
  (``DATABASE_URL_TEST``; one connection, idle pre-ping off so that no round trip is counted): what every
  request does.

It prints the ratios new/reused: how many times the cost of the reused greenlet a new one costs.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import uvloop
from sqlalchemy.util import greenlet_spawn

try:
    from sqlalchemy.util import await_ as await_only
except ImportError:  # SQLAlchemy 2.0 names it await_only
    from sqlalchemy.util import await_only

from productos.infra.db.engine import create_engine
from productos.infra.db.greenlets import run_in_greenlet
from productos.settings import settings_from_values

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"

Bridge = Callable[[Callable[[], Any]], Awaitable[Any]]


def _trivial() -> int:
    return 1


async def _nothing() -> int:
    return 1


def _one_await() -> int:
    return await_only(_nothing())


async def _cpu_us(bridge: Bridge, fn: Callable[[], Any], calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        await bridge(fn)
    return (time.process_time() - started) / calls * 1e6


async def measure(url: str, rounds: int, calls: int) -> dict[str, dict[str, float]]:
    engine = create_engine(
        settings_from_values(
            {"database_url": url, "db_pool_size": 1, "db_max_overflow": 0, "db_pool_pre_ping_idle": 3600}
        )
    )
    pool = engine.sync_engine.pool

    def checkout() -> None:
        pool.connect().close()

    bridges: dict[str, Bridge] = {"new greenlet": greenlet_spawn, "reused greenlet": run_in_greenlet}
    work = {"trivial": _trivial, "one await": _one_await, "checkout": checkout}
    best: dict[str, dict[str, float]] = {name: {} for name in work}
    try:
        for bridge in bridges.values():  # warm-up: the connection is opened, the statement caches filled
            for fn in work.values():
                await _cpu_us(bridge, fn, 200)
        for _ in range(rounds):
            for name, fn in work.items():
                for label, bridge in bridges.items():
                    spent = await _cpu_us(bridge, fn, calls)
                    best[name][label] = min(spent, best[name].get(label, spent))
    finally:
        await engine.dispose()
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.greenlets", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args(argv)
    url = os.environ.get("DATABASE_URL_TEST", DEFAULT_URL)
    best = uvloop.run(measure(url, args.rounds, args.calls))
    print(f"CPU µs per call, best of {args.rounds} rounds x {args.calls:,} calls, alternated")
    print("| call | new greenlet (greenlet_spawn) | reused greenlet (run_in_greenlet) | new/reused |")
    print("|---|---|---|---|")
    for name, figures in best.items():
        new, reused = figures["new greenlet"], figures["reused greenlet"]
        print(f"| {name} | {new:.2f} | {reused:.2f} | {new / reused:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
