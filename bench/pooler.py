"""The fast path behind a transaction-mode pooler: ``python -m bench.pooler [--rounds 9] [--ops 300]``.

One process, the products service's units of work (``SqlProductosUnitOfWork``: the statement toolkit on the
pooled asyncpg connection), one connection per engine, on a scratch database of 1,000 products (created beside
``DATABASE_URL_TEST``'s, dropped at the end). Three ways to reach PostgreSQL, alternated in every round:

- (a) ``DB_POOLER=none``, straight to PostgreSQL: asyncpg's named statements, session limits at login;
- (b) ``DB_POOLER=transaction``, still straight to PostgreSQL: what the transaction-mode protocol costs by itself
  (every unit in BEGIN...COMMIT with ``SET LOCAL``, each statement parsed again);
- (c) ``DB_POOLER=transaction`` through PgBouncer (Debian's package, transaction pooling, on a free port): (b)
  plus PgBouncer's hop on every round trip.

Operations: a read-only unit that gets a product by id; an autocommit unit that adds one. Figures: median over
rounds of wall time per unit (µs) and of this process' CPU per unit (µs); for (c), PgBouncer's own CPU per unit
(over all rounds: its clock ticks are 10 ms); and the round trips per unit, counted on the wire by a proxy in
front of each target (``bench.roundtrips.WireCounter``) in a separate pass.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import seed
from bench.roundtrips import WireCounter
from productos.infra.db.engine import create_engine
from productos.services.productos.domain import NewProducto
from productos.services.productos.repository import SqlProductosUnitOfWork
from productos.settings import settings_from_values
from productos.testing import PgBouncer

ROWS = 1000
Op = Callable[[int], Awaitable[Any]]


def _engine(url: str, pooler: str) -> AsyncEngine:
    return create_engine(
        settings_from_values({"database_url": url, "db_pooler": pooler, "db_pool_size": 1, "db_max_overflow": 0})
    )


def _ops(engine: AsyncEngine) -> dict[str, Op]:
    units = SqlProductosUnitOfWork.factory(engine)

    async def get(i: int) -> None:
        async with units(read_only=True) as uow:
            assert await uow.productos.get(i % ROWS + 1) is not None

    async def add(i: int) -> None:
        async with units(autocommit=True) as uow:
            await uow.productos.add(NewProducto(nombre=f"bench {i}", precio=Decimal("9.99")))
            await uow.commit()

    return {"get by id (read-only unit)": get, "add (autocommit unit)": add}


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


async def _measure(op: Op, ops: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    for i in range(ops):
        await op(i)
    return (time.perf_counter_ns() - wall) / ops / 1000, (time.process_time_ns() - cpu) / ops / 1000


async def timings(
    targets: dict[str, AsyncEngine], rounds: int, ops: int, bouncer_pid: int
) -> tuple[dict[str, dict[str, tuple[float, float]]], dict[str, float]]:
    contenders = {key: _ops(engine) for key, engine in targets.items()}
    for by_op in contenders.values():  # warm-up: connections, asyncpg's statements, the toolkit's caches
        for op in by_op.values():
            await _measure(op, 100)
    samples: dict[str, dict[str, list[tuple[float, float]]]] = {
        name: {key: [] for key in contenders} for name in contenders["a"]
    }
    bouncer_ticks: dict[str, int] = dict.fromkeys(samples, 0)
    for round_ in range(rounds):
        keys = list(contenders)
        keys = keys[round_ % len(keys) :] + keys[: round_ % len(keys)]
        for name in samples:
            for key in keys:
                before = _cpu_ticks(bouncer_pid)
                samples[name][key].append(await _measure(contenders[key][name], ops))
                if key == "c":
                    bouncer_ticks[name] += _cpu_ticks(bouncer_pid) - before
    medians = {
        name: {key: (statistics.median(s[0] for s in runs), statistics.median(s[1] for s in runs))
               for key, runs in by_key.items()}
        for name, by_key in samples.items()
    }  # fmt: skip
    tick_us = 1_000_000 / os.sysconf("SC_CLK_TCK")
    bouncer_cpu = {name: ticks * tick_us / (rounds * ops) for name, ticks in bouncer_ticks.items()}
    return medians, bouncer_cpu


async def roundtrips(urls: dict[str, tuple[str, str]], ops: int) -> dict[str, dict[str, float]]:
    """Round trips per unit, read off the wire in front of each target."""
    counted: dict[str, dict[str, float]] = {}
    for key, (url, pooler) in urls.items():
        parsed = make_url(url)
        with WireCounter((parsed.host or "127.0.0.1", parsed.port or 5432)) as counter:
            engine = _engine(parsed.set(port=counter.port).render_as_string(hide_password=False), pooler)
            try:
                for name, op in _ops(engine).items():
                    await _measure(op, 50)
                    counter.reset()
                    await _measure(op, ops)
                    with counter._lock:
                        counted.setdefault(name, {})[key] = counter.roundtrips / ops
            finally:
                await engine.dispose()
    return counted


def report(
    medians: dict[str, dict[str, tuple[float, float]]],
    bouncer_cpu: dict[str, float],
    trips: dict[str, dict[str, float]],
) -> str:
    lines = [
        "| unit of work | round trips a / b / c | wall µs a / b / c | c/a | b/a | client CPU µs a / b / c "
        "| PgBouncer CPU µs (c) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, by_key in medians.items():
        (aw, ac), (bw, bc), (cw, cc) = by_key["a"], by_key["b"], by_key["c"]
        rt = trips.get(name, {})
        rts = " / ".join(f"{rt[k]:.2f}" if k in rt else "—" for k in "abc")
        lines.append(
            f"| {name} | {rts} | {aw:.0f} / {bw:.0f} / {cw:.0f} | {cw / aw:.2f} | {bw / aw:.2f} "
            f"| {ac:.0f} / {bc:.0f} / {cc:.0f} | {bouncer_cpu[name]:.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pooler", description=__doc__)
    parser.add_argument("--rounds", type=int, default=9, help="rounds of alternation (9)")
    parser.add_argument("--ops", type=int, default=300, help="units of work per contender, operation and round (300)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="productos-bench-pooler-"))
    with seed.scratch_database(workdir, ROWS, "bench_pooler") as url, PgBouncer(url, pool_size=2) as bouncer:
        pooled = bouncer.url(make_url(url).database or "")
        urls = {"a": (url, "none"), "b": (url, "transaction"), "c": (pooled, "transaction")}

        async def run() -> str:
            engines = {key: _engine(target, pooler) for key, (target, pooler) in urls.items()}
            try:
                assert bouncer.process is not None
                medians, bouncer_cpu = await timings(engines, args.rounds, args.ops, bouncer.process.pid)
            finally:
                for engine in engines.values():
                    await engine.dispose()
            trips = await roundtrips(urls, 100)
            return report(medians, bouncer_cpu, trips)

        table = asyncio.run(run())
    print(f"{args.rounds} rounds x {args.ops} units per contender and operation; medians over rounds\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
