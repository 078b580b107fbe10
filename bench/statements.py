"""SQLAlchemy Core statements on the asyncpg path, against raw asyncpg and SQLAlchemy's own execution.

``python -m bench.statements [--rounds 15] [--ops 500]``: one process, one scratch database (created beside
``DATABASE_URL_TEST``'s and dropped at the end), an 8-column table of 1,000 rows, a pool of 2 connections.
Per scenario, the contenders alternate in every round (their order rotating), each running ``--ops``
statements in a row on a connection it holds:

- (a) raw asyncpg: ``fetchrow`` on the pooled connection's asyncpg connection, with the SQL text the toolkit
  compiled (the same ``$n`` casts), asyncpg ``Record``s as they come;
- (b) ``productos.infra.db.statements`` on a ``DriverConnection``: the Core statement, a parameter dict, rows
  mapped with the columns' types (``UtcDateTime``, ``Money``);
- (c) SQLAlchemy Core: ``AsyncConnection.execute(statement, params).first()``;
- (d) hand-written SQL on the driver connection (the products service before the toolkit):
  ``DriverConnection.fetchrow``, records as they come; (b) over (d) is what the statements and the row
  mapping add to the driver connection.

Scenarios: SELECT by primary key, INSERT ... RETURNING of the 8 columns, each with the statement declared once;
then the same two built anew on every call (``select(...).where(t.c.id == i)``, ``insert().values(**row)``),
where (b) pays SQLAlchemy's cache key per call. Figures: median over rounds of wall time per statement (a
round trip to the local server included; ``synchronous_commit=off``) and of this process' CPU time per statement,
and their ratios to (a).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text, bindparam, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from productos.infra.db.driver import DriverConnection
from productos.infra.db.statements import DriverSqlConnection, StatementCache
from productos.infra.db.types import Money, UtcDateTime

ADMIN_URL = os.environ.get("DATABASE_URL_TEST", "postgresql://postgres@127.0.0.1:5432/test")
ROWS = 1000

metadata = MetaData()
t = Table(
    "bench_productos",
    metadata,
    Column("id", BigInteger(), primary_key=True, autoincrement=True),
    Column("nombre", String(200), nullable=False),
    Column("descripcion", Text(), nullable=True),
    Column("precio", Money(), nullable=False),
    Column("stock", Integer(), nullable=False, default=0),
    Column("version", Integer(), nullable=False, default=1),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

GET = select(t).where(t.c.id == bindparam("id"))
INSERT = (
    insert(t)
    .values(
        nombre=bindparam("nombre"),
        descripcion=bindparam("descripcion"),
        precio=bindparam("precio"),
        stock=bindparam("stock"),
        version=bindparam("version"),
        created_at=bindparam("created_at"),
        updated_at=bindparam("updated_at"),
    )
    .returning(*t.c)
)

Op = Callable[[int], Awaitable[Any]]


def _row(i: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "nombre": f"producto {i}",
        "descripcion": "carga del benchmark",
        "precio": Decimal("49.99"),
        "stock": 3,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }


def _args(row: dict[str, Any]) -> tuple[Any, ...]:
    # In the order of INSERT's $n (the toolkit's compiled text: the values' order above).
    return tuple(row.values())


def contenders(
    driver: DriverConnection, toolkit: DriverSqlConnection, core: AsyncConnection, sql: dict[str, str]
) -> dict[str, dict[str, Op]]:
    raw = driver.driver

    async def a_get(i: int) -> Any:
        return await raw.fetchrow(sql["get"], i % ROWS + 1)

    async def d_get(i: int) -> Any:
        return await driver.fetchrow(sql["get"], i % ROWS + 1)

    async def d_insert(i: int) -> Any:
        return await driver.fetchrow(sql["insert"], *_args(_row(i)))

    async def b_get(i: int) -> Any:
        return await toolkit.fetch_one(GET, {"id": i % ROWS + 1})

    async def c_get(i: int) -> Any:
        return (await core.execute(GET, {"id": i % ROWS + 1})).first()

    async def a_insert(i: int) -> Any:
        return await raw.fetchrow(sql["insert"], *_args(_row(i)))

    async def b_insert(i: int) -> Any:
        return await toolkit.fetch_one(INSERT, _row(i))

    async def c_insert(i: int) -> Any:
        return (await core.execute(INSERT, _row(i))).first()

    async def b_get_anew(i: int) -> Any:
        return await toolkit.fetch_one(select(t).where(t.c.id == i % ROWS + 1))

    async def c_get_anew(i: int) -> Any:
        return (await core.execute(select(t).where(t.c.id == i % ROWS + 1))).first()

    async def b_insert_anew(i: int) -> Any:
        return await toolkit.fetch_one(insert(t).values(**_row(i)).returning(*t.c))

    async def c_insert_anew(i: int) -> Any:
        return (await core.execute(insert(t).values(**_row(i)).returning(*t.c))).first()

    return {
        "SELECT by id": {"a": a_get, "b": b_get, "c": c_get, "d": d_get},
        "INSERT ... RETURNING": {"a": a_insert, "b": b_insert, "c": c_insert, "d": d_insert},
        "SELECT by id, built anew": {"a": a_get, "b": b_get_anew, "c": c_get_anew},
        "INSERT ... RETURNING, built anew": {"a": a_insert, "b": b_insert_anew, "c": c_insert_anew},
    }


async def _measure(op: Op, ops: int) -> tuple[float, float]:
    """µs per statement: wall, and this process' CPU."""
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    for i in range(ops):
        await op(i)
    return (time.perf_counter_ns() - wall) / ops / 1000, (time.process_time_ns() - cpu) / ops / 1000


async def run(url: str, rounds: int, ops: int) -> dict[str, dict[str, tuple[float, float]]]:
    engine = create_async_engine(
        url,
        pool_size=2,
        max_overflow=0,
        isolation_level="AUTOCOMMIT",
        # The WAL flush of each autocommitted INSERT is the server's cost, the same for every contender, and the
        # noisiest part of its time: off, the figures compare the client paths.
        connect_args={"server_settings": {"synchronous_commit": "off"}},
    )
    try:
        async with engine.connect() as conn:
            await conn.run_sync(metadata.create_all)
            now = datetime.now(UTC)
            await conn.execute(insert(t), [_row(i) | {"created_at": now} for i in range(ROWS)])
        cache = StatementCache(engine.dialect)
        driver = await DriverConnection.checkout(engine)
        try:
            async with engine.connect() as core:
                toolkit = DriverSqlConnection(driver, cache)
                # The toolkit's compiled text, for (a): the same SQL, so the comparison is of the paths only.
                sql = {
                    "get": cache.sql(GET, {"id": 1}),
                    "insert": cache.sql(INSERT, _row(0)),
                }
                scenarios = contenders(driver, toolkit, core, sql)
                for ops_of in scenarios.values():  # warm-up: asyncpg prepares, SQLAlchemy caches
                    for op in ops_of.values():
                        await _measure(op, 200)
                samples: dict[str, dict[str, list[tuple[float, float]]]] = {
                    name: {key: [] for key in ops_of} for name, ops_of in scenarios.items()
                }
                for round_ in range(rounds):
                    for name, ops_of in scenarios.items():
                        keys = list(ops_of)
                        keys = keys[round_ % len(keys) :] + keys[: round_ % len(keys)]
                        for key in keys:
                            samples[name][key].append(await _measure(ops_of[key], ops))
        finally:
            await driver.release()
    finally:
        await engine.dispose()
    return {
        name: {
            key: (statistics.median(s[0] for s in runs), statistics.median(s[1] for s in runs))
            for key, runs in by_key.items()
        }
        for name, by_key in samples.items()
    }


def report(results: dict[str, dict[str, tuple[float, float]]]) -> str:
    lines = [
        "| statement | (a) asyncpg µs | (b) toolkit µs | (c) Core µs | (d) driver+text µs | b/a | c/a | b/d "
        "| CPU a / b / c / d µs | CPU b/a | CPU c/a | CPU b/d |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_key in results.items():
        (aw, ac), (bw, bc), (cw, cc) = by_key["a"], by_key["b"], by_key["c"]
        # (d) runs SQL text only: the statements built anew have no row of theirs there.
        d = by_key.get("d")
        d_wall, b_over_d = ("—", "—") if d is None else (f"{d[0]:.1f}", f"{bw / d[0]:.2f}")
        d_cpu, cpu_b_over_d = ("—", "—") if d is None else (f"{d[1]:.1f}", f"{bc / d[1]:.2f}")
        lines.append(
            f"| {name} | {aw:.1f} | {bw:.1f} | {cw:.1f} | {d_wall} | {bw / aw:.2f} | {cw / aw:.2f} | {b_over_d} "
            f"| {ac:.1f} / {bc:.1f} / {cc:.1f} / {d_cpu} | {bc / ac:.2f} | {cc / ac:.2f} | {cpu_b_over_d} |"
        )
    return "\n".join(lines)


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.statements", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15, help="rounds of alternation (15)")
    parser.add_argument("--ops", type=int, default=500, help="statements per contender and round (500)")
    args = parser.parse_args(argv)
    name = f"productos_bench_{secrets.token_hex(5)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(ADMIN_URL).set(drivername="postgresql+asyncpg", database=name)
        results = asyncio.run(run(url.render_as_string(hide_password=False), args.rounds, args.ops))
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(f"{args.rounds} rounds x {args.ops} statements per contender; medians over rounds\n")
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
