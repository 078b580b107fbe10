"""``bench.pool_sizing``'s pieces, cheaply and without wrk: the contenders each pool size makes, the connections
sampler on a real database, (c)'s pool sized from outside, the stock-pool variant, and the table. Never a timing
assertion."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bench import seed
from bench.harness import REPO_ROOT, WORKERS, Server
from bench.pool_sizing import (
    STOCK_POOL_APP,
    HeldConnections,
    PoolSize,
    markdown,
    p99_ratios,
    pool_contenders,
    summarize,
)

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with seed.scratch_database(tmp_path_factory.mktemp("pool-sizing"), 20, "bench_pools_test") as url:
        yield url


def test_pool_sizes_parse_and_refuse_nonsense() -> None:
    assert PoolSize.parse("4+0") == PoolSize(4, 0) == PoolSize.parse("4")
    assert PoolSize.parse(" 10+20 ").label == "10+20"
    for bad in ("0+0", "4+-1", "four", "4+x"):
        with pytest.raises(argparse.ArgumentTypeError):
            PoolSize.parse(bad)


def test_each_pool_size_makes_productos_and_fastapi_asyncpg_on_that_pool() -> None:
    pairs = pool_contenders([PoolSize(4, 0), PoolSize(10, 20)], stock_pool=True)
    assert [(c.key, c.name, pool.label) for c, pool in pairs] == [
        ("a4+0", "productos", "4+0"),
        ("s4+0", "productos on SQLAlchemy's pool", "4+0"),
        ("c4+0", "fastapi-asyncpg", "4+0"),
        ("a10+20", "productos", "10+20"),
        ("s10+20", "productos on SQLAlchemy's pool", "10+20"),
        ("c10+20", "fastapi-asyncpg", "10+20"),
    ]
    a, stock, c = (contender for contender, _ in pairs[:3])
    assert (a.env["DB_POOL_SIZE"], a.env["DB_MAX_OVERFLOW"], a.env["WORKERS"]) == ("4", "0", str(WORKERS))
    assert stock.app == STOCK_POOL_APP and stock.env["DB_POOL_SIZE"] == "4"
    assert (c.env["BENCH_POOL_MIN"], c.env["BENCH_POOL_MAX"]) == ("4", "4")
    assert pairs[5][0].env["BENCH_POOL_MAX"] == "30"  # 10 + 20, as productos may hold


async def test_the_sampler_counts_the_databases_connections_but_its_own(database_url: str) -> None:
    held = await asyncio.to_thread(HeldConnections(database_url, interval=0.02).start)
    try:
        connections = [await asyncpg.connect(database_url) for _ in range(3)]
        await asyncio.sleep(0.3)
        for connection in connections:
            await connection.close()
        await asyncio.sleep(0.3)
    finally:
        summary = await asyncio.to_thread(held.stop)
    assert summary["error"] is None and summary["samples"] >= 5
    assert summary["max"] == 3 and 0 < summary["mean"] < 3


@pytest.mark.slow
def test_fastapi_asyncpg_opens_the_pool_it_is_given(database_url: str, tmp_path: Path) -> None:
    (_, _), (_, _), (contender, _) = pool_contenders([PoolSize(1, 1)], stock_pool=True)
    with Server(contender, database_url, tmp_path):
        held = HeldConnections(database_url, interval=0.05).start()
        time.sleep(0.5)
        summary = held.stop()
    assert summary["max"] == WORKERS  # min_size 1 in each worker


def test_the_stock_pool_variant_puts_sqlalchemys_pool_under_productos(database_url: str) -> None:
    probe = (
        "import importlib, json, sys\n"
        "from productos.settings import Settings\n"
        "from productos.infra.db.engine import create_engine\n"
        "before = type(create_engine(Settings(database_url=sys.argv[1])).sync_engine.pool).__name__\n"
        f"importlib.import_module({STOCK_POOL_APP.partition(':')[0]!r})\n"
        "after = type(create_engine(Settings(database_url=sys.argv[1])).sync_engine.pool).__name__\n"
        "print(json.dumps([before, after]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-c", probe, database_url], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["FairAsyncQueuePool", "AsyncAdaptedQueuePool"]


def _run(contender: str, connections: int, round_no: int, p99: float, **extra: Any) -> dict[str, Any]:
    return {
        "round": round_no, "contender": contender, "name": contender[0] * 3, "pool": contender[1:],
        "connections": connections, "rps": 1000.0 * round_no, "p50_ms": 1.0, "p99_ms": p99, "requests": 100,
        "non_2xx": extra.get("non_2xx", 0), "socket_errors": extra.get("socket_errors", 0),
        "connections_held": {"max": extra.get("held", 8), "mean": 7.5, "samples": 10, "error": None},
    }  # fmt: skip


def test_the_table_has_medians_errors_connections_and_p99_against_fastapi_asyncpg() -> None:
    runs = [
        _run("a4+0", 64, 1, 30.0, non_2xx=2, held=8),
        _run("a4+0", 64, 2, 40.0, socket_errors=1, held=7),
        _run("c4+0", 64, 1, 20.0),
        _run("c4+0", 64, 2, 20.0),
    ]
    rows = summarize(runs)
    a = rows[0]
    assert (a["rps"], a["p99_ms"], a["non_2xx"], a["socket_errors"], a["connections_held_max"]) == (
        1500.0, 35.0, 2, 1, 8,
    )  # fmt: skip
    (ratio,) = p99_ratios(rows)
    assert (ratio["contender"], ratio["connections"], ratio["ratio"]) == ("a4+0", 64, 1.75)
    meta = {
        "date": "2026-01-01", "stem": "2026-01-01-pool-sizing", "rounds": 2, "duration_s": 10, "warmup_s": 2,
        "command": "python -m bench.pool_sizing", "postgres": "15", "max_connections": 100,
        "machine": {"nproc": 2, "cpu_model": "cpu", "kernel": "6", "sqlalchemy": "2.1", "wrk": "wrk"},
    }  # fmt: skip
    table = markdown({"meta": meta, "summary": rows, "p99_ratios": [ratio]})
    assert "| a4+0 aaa | 4+0 | c64 | 1,500 | 1.0 | 35.0 | 2 | 1 | 8 / 7.5 |" in table
    assert "| a4+0 | 4+0 | c64 | 35.0 | 20.0 | 1.75 |" in table
