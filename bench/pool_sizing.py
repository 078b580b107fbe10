"""Pool sizes under load: ``python -m bench.pool_sizing`` (issue 13). See bench/README.md, "Pool sizing".

productos (a) with each pool size per worker (``DB_POOL_SIZE+DB_MAX_OVERFLOW``, e.g. ``4+0`` and today's default
``10+20``), and FastAPI on an asyncpg pool of the same size (c: ``min_size`` the pool size, ``max_size`` pool +
overflow), alternated in every round, each under gunicorn with 2 workers on a 1,000-row table, ``GET
/productos/{id}`` at each concurrency (default c8, c64, c256). ``--stock-pool`` adds productos on SQLAlchemy's
own queue pool (``bench.contenders.productos_stock_pool``), the before of the fair wait.

Per run: req/s, p50 and p99 (ms), non-2xx responses (503s: under this load productos answers nothing else that
is not 2xx), socket errors (wrk's connect/read/write errors and its 2-s timeouts), and the connections held on
the database while wrk runs (``pg_stat_activity`` sampled every 100 ms by a connection of its own, not counted):
their maximum and mean. Medians over rounds for rates and latencies, sums for errors, maxima for connections.
Writes ``bench/results/<date>-pool-sizing[-tag].json`` and ``.md`` (the table), and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import seed
from bench.harness import (
    BENCH_DIR,
    SMALL_ROWS,
    WORKERS,
    Contender,
    Server,
    contenders,
    get_scenario,
    machine_info,
    run_wrk,
    variant,
)
from bench.run import log, preflight, productos_git_state

SCENARIO = get_scenario("get_id", "/productos/{n}", 1, SMALL_ROWS)
STOCK_POOL_APP = "bench.contenders.productos_stock_pool:app"
#: The goal of issue 13: productos' p99 within this ratio of (c)'s on a pool of the same size, at c64.
P99_GOAL = 1.5


@dataclass(frozen=True)
class PoolSize:
    """``DB_POOL_SIZE`` and ``DB_MAX_OVERFLOW`` of each worker."""

    size: int
    overflow: int

    @classmethod
    def parse(cls, text: str) -> PoolSize:
        size, sep, overflow = text.strip().partition("+")
        try:
            parsed = cls(int(size), int(overflow) if sep else 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected SIZE+OVERFLOW (4+0, 10+20), got {text!r}") from None
        if parsed.size < 1 or parsed.overflow < 0:
            raise argparse.ArgumentTypeError(f"a pool needs at least 1 connection and no negative overflow: {text!r}")
        return parsed

    @property
    def label(self) -> str:
        return f"{self.size}+{self.overflow}"


def pool_contenders(pools: Sequence[PoolSize], *, stock_pool: bool) -> list[tuple[Contender, PoolSize]]:
    """For each pool size: productos (a), optionally productos on SQLAlchemy's pool, and (c), that size."""
    specs = contenders()
    out = []
    for pool in pools:
        env = f"DB_POOL_SIZE={pool.size},DB_MAX_OVERFLOW={pool.overflow}"
        out.append((replace(variant(specs["a"], f"a{pool.label}:{env}"), name="productos"), pool))
        if stock_pool:
            stock = variant(specs["a"], f"s{pool.label}:{env},APP={STOCK_POOL_APP}")
            out.append((replace(stock, name="productos on SQLAlchemy's pool"), pool))
        asyncpg_env = f"BENCH_POOL_MIN={pool.size},BENCH_POOL_MAX={pool.size + pool.overflow}"
        out.append((replace(variant(specs["c"], f"c{pool.label}:{asyncpg_env}"), name="fastapi-asyncpg"), pool))
    return out


class HeldConnections:
    """Samples, in a thread of its own, how many connections the database ``url`` names has open (its own
    connection not counted), every ``interval`` seconds between ``start()`` and ``stop()``."""

    def __init__(self, url: str, interval: float = 0.1) -> None:
        self.url = url
        self.interval = interval
        self.samples: list[int] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> HeldConnections:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(10)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        samples = self.samples
        return {
            "max": max(samples) if samples else None,
            "mean": round(statistics.fmean(samples), 1) if samples else None,
            "samples": len(samples),
            "error": self.error,
        }

    def _run(self) -> None:
        try:
            asyncio.run(self._sample())
        except Exception as exc:  # the shared server may be out of connections: say so, do not stop the run
            self.error = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            self._ready.set()

    async def _sample(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(self.url, timeout=5)
        try:
            query = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            self._ready.set()
            while not self._stop.is_set():
                self.samples.append(int(await conn.fetchval(query)))
                await asyncio.sleep(self.interval)
        finally:
            await conn.close()


def measure(server: Server, url: str, connections: int, duration: float) -> dict[str, Any]:
    """One wrk run against ``server``, with the database's connections sampled while it runs."""
    held = HeldConnections(url).start()
    try:
        result = run_wrk(server.base_url, SCENARIO, connections, duration)
    finally:
        connections_held = held.stop()
    return {
        **result.as_dict(),
        "non_2xx": result.error_detail.get("status", 0),
        "socket_errors": result.errors - result.error_detail.get("status", 0),
        "connections_held": connections_held,
    }


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per contender and concurrency, in the order they first ran: medians, sums and maxima."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["contender"], run["connections"]), []).append(run)
    rows = []
    for (contender, connections), group in groups.items():
        p50 = [r["p50_ms"] for r in group if r["p50_ms"] is not None]
        p99 = [r["p99_ms"] for r in group if r["p99_ms"] is not None]
        held_max = [r["connections_held"]["max"] for r in group if r["connections_held"]["max"] is not None]
        held_mean = [r["connections_held"]["mean"] for r in group if r["connections_held"]["mean"] is not None]
        rows.append({
            "contender": contender, "name": group[0]["name"], "pool": group[0]["pool"], "connections": connections,
            "rps": round(statistics.median(r["rps"] for r in group), 1),
            "p50_ms": round(statistics.median(p50), 2) if p50 else None,
            "p99_ms": round(statistics.median(p99), 2) if p99 else None,
            "non_2xx": sum(r["non_2xx"] for r in group),
            "socket_errors": sum(r["socket_errors"] for r in group),
            "requests": sum(r["requests"] for r in group),
            "connections_held_max": max(held_max) if held_max else None,
            "connections_held_mean": round(statistics.median(held_mean), 1) if held_mean else None,
            "runs": len(group),
        })  # fmt: skip
    return rows


def p99_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """productos' p99 over (c)'s on a pool of the same size, at each concurrency."""
    by_key = {(row["contender"], row["connections"]): row for row in rows}
    ratios = []
    for row in rows:
        if not row["contender"].startswith(("a", "s")):
            continue
        other = by_key.get(("c" + row["contender"][1:], row["connections"]))
        if other and other["p99_ms"] and row["p99_ms"]:
            ratio = round(row["p99_ms"] / other["p99_ms"], 2)
            ratios.append({
                "contender": row["contender"], "pool": row["pool"], "connections": row["connections"],
                "p99_ms": row["p99_ms"], "c_p99_ms": other["p99_ms"], "ratio": ratio,
            })  # fmt: skip
    return ratios


def _cell(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    """The pool-sizing table, and productos' p99 against (c)'s on the same pool."""
    meta = result["meta"]
    m = meta["machine"]
    lines = [
        f"### Pool sizing, {meta['date']}",
        "",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, shared with other work; PostgreSQL "
        f"{meta['postgres']} on the same host, max_connections {meta['max_connections']}. SQLAlchemy "
        f"{m['sqlalchemy']}, {m['wrk']}.",
        f"- `GET /productos/{{id}}`, gunicorn with {WORKERS} workers, {meta['rounds']} rounds alternating the "
        f"contenders, wrk -t2 {meta['duration_s']:g} s per run after a {meta['warmup_s']:g} s warm-up; medians "
        "over rounds (errors summed, connections: the highest sample).",
        f"- Command: `{meta['command']}`; raw results `bench/results/{meta['stem']}.json`.",
        "",
        "| contender | pool per worker | conc | req/s | p50 ms | p99 ms | non-2xx (503) | socket errors "
        "| connections held (max / mean) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["summary"]:
        lines.append(
            f"| {row['contender']} {row['name']} | {row['pool']} | c{row['connections']} | {_cell(row['rps'], 0)} "
            f"| {_cell(row['p50_ms'])} | {_cell(row['p99_ms'])} | {row['non_2xx']:,} | {row['socket_errors']:,} "
            f"| {row['connections_held_max'] if row['connections_held_max'] is not None else '—'} / "
            f"{_cell(row['connections_held_mean'])} |"
        )
    if result["p99_ratios"]:
        lines += [
            "",
            f"productos' p99 over (c)'s on a pool of the same size (goal at c64: at most {P99_GOAL}x):",
            "",
            "| contender | pool per worker | conc | p99 ms | (c) p99 ms | ratio |",
            "|---|---|---|---|---|---|",
        ]
        for r in result["p99_ratios"]:
            lines.append(
                f"| {r['contender']} | {r['pool']} | c{r['connections']} | {_cell(r['p99_ms'])} "
                f"| {_cell(r['c_p99_ms'])} | {r['ratio']:.2f} |"
            )
    return "\n".join(lines) + "\n"


async def _max_connections(url: str) -> int:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(url, timeout=5)
    try:
        return int(await conn.fetchval("SHOW max_connections"))
    finally:
        await conn.close()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pool_sizing", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pools", default="4+0,10+20", help="pool sizes per worker, SIZE+OVERFLOW, comma-separated (4+0,10+20)"
    )
    parser.add_argument("--connections", default="8,64,256", help="wrk concurrencies (8,64,256)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of alternation (3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up after each start (2)")
    parser.add_argument("--stock-pool", action="store_true", help="also productos on SQLAlchemy's own pool")
    parser.add_argument("--only", help="only these contender keys, comma-separated (a4+0,c4+0...)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="directory for the JSON and table")
    parser.add_argument("--tag", default="", help="suffix of the result files' name")
    args = parser.parse_args(argv)
    args.pools = [PoolSize.parse(p) for p in args.pools.split(",")]
    args.connections = [int(c) for c in args.connections.split(",")]
    args.only = set(args.only.split(",")) if args.only else None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pairs = [
        (contender, pool)
        for contender, pool in pool_contenders(args.pools, stock_pool=args.stock_pool)
        if args.only is None or contender.key in args.only
    ]
    if not pairs:
        raise SystemExit("no contender left: check --only against the keys (a<pool>, s<pool>, c<pool>)")
    date = dt.date.today().isoformat()
    stem = f"{date}-pool-sizing" + (f"-{args.tag}" if args.tag else "")
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="productos-pool-sizing-"))
    result: dict[str, Any] = {
        "meta": {
            "date": date, "stem": stem, "rounds": args.rounds, "duration_s": args.duration,
            "warmup_s": args.warmup, "connections": args.connections, "pools": [p.label for p in args.pools],
            "command": ("python -m bench.pool_sizing " + shlex.join(sys.argv[1:] if argv is None else argv)).strip(),
            "machine": machine_info(), "postgres": asyncio.run(seed.server_version()),
            "max_connections": asyncio.run(_max_connections(seed.ADMIN_URL)), "workdir": str(workdir),
            "productos_git": productos_git_state(),
            "contenders": {c.key: {"name": c.name, "app": c.app, "env": dict(c.env)} for c, _ in pairs},
        },
        "runs": [],
    }  # fmt: skip
    log(f"logs in {workdir}; contenders {', '.join(c.key for c, _ in pairs)}")
    with seed.scratch_database(workdir, SMALL_ROWS, "bench_pools") as url:
        for round_no in range(1, args.rounds + 1):
            log(f"round {round_no}/{args.rounds}")
            for contender, pool in pairs:
                with Server(contender, url, workdir) as server:
                    preflight(server, [SCENARIO])
                    run_wrk(server.base_url, SCENARIO, min(args.connections), args.warmup)
                    for connections in args.connections:
                        run = measure(server, url, connections, args.duration)
                        result["runs"].append({
                            "round": round_no, "contender": contender.key, "name": contender.name,
                            "pool": pool.label, **run,
                        })  # fmt: skip
                        held = run["connections_held"]
                        log(
                            f"  {contender.key:8} c{connections:<3} {run['rps']:9,.1f} req/s  p99 "
                            f"{_cell(run['p99_ms'], 2)} ms  non-2xx {run['non_2xx']}  socket errors "
                            f"{run['socket_errors']}  connections held max {held['max']}"
                        )
                        time.sleep(0.5)
    result["summary"] = summarize(result["runs"])
    result["p99_ratios"] = p99_ratios(result["summary"])
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    table = markdown(result)
    (args.out / f"{stem}.md").write_text(table)
    print(table)
    log(f"wrote {json_path} and {json_path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
