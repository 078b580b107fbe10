"""Run the productos benchmarks: ``python -m bench.run`` (``--quick``: a smoke run). See bench/README.md."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench import report, seed
from bench.harness import (
    BENCH_DIR,
    DEEP_ROWS,
    DEFAULT_POOL,
    SMALL_ROWS,
    Contender,
    Scenario,
    Server,
    contenders,
    database_sessions,
    machine_info,
    one_request,
    run_wrk,
    variant,
)


def _env_pair(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return key, val


def _pool(value: str) -> tuple[int, int]:
    size, sep, overflow = value.partition("+")
    if not sep or not size.isdigit() or not overflow.isdigit() or int(size) < 1:
        raise argparse.ArgumentTypeError(f"expected SIZE+OVERFLOW (4+4), got {value!r}")
    return int(size), int(overflow)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, 1 s per measurement, no README")
    parser.add_argument("--rounds", type=int, help="rounds of alternation (default 3; --quick: 1)")
    parser.add_argument("--duration", type=int, help="whole seconds per wrk measurement (default 5; --quick: 1)")
    parser.add_argument("--warmup", type=int, help="whole seconds of wrk warm-up per server start (default 1)")
    parser.add_argument("--connections", default="8,64", help="wrk concurrencies, comma-separated (default 8,64)")
    parser.add_argument(
        "--contenders",
        default="abcdefgp",
        help="which of a..g (g: productos through PgBouncer) and p (pedidos) to run, in this order (default abcdefgp)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:ENV=VALUE,...",
        help="also run productos with other settings (APP=module:attr: another app), as NAME; repeatable",
    )
    parser.add_argument("--scenarios", help="only these scenario keys, comma-separated (default all)")
    parser.add_argument(
        "--productos-env", type=_env_pair, action="append", default=[], metavar="KEY=VALUE",
        help="environment for productos (a) only, e.g. LOG_LEVEL=warning; repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--pool", type=_pool, default=DEFAULT_POOL, metavar="SIZE+OVERFLOW",
        help=f"every contender's pool per worker (default productos' own: {DEFAULT_POOL[0]}+{DEFAULT_POOL[1]})",
    )  # fmt: skip
    parser.add_argument("--deep-rows", type=int, default=DEEP_ROWS, help="rows of the deep-page table")
    parser.add_argument(
        "--all-rows-timeout", type=float, default=120,
        help="seconds allowed for (e)'s one request listing every row of the deep table (0 skips it)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="directory for JSON and PNG")
    parser.add_argument("--tag", default="", help="suffix of the result files' name (<date>[-tag])")
    parser.add_argument("--no-readme", action="store_true", help="do not write the results into bench/README.md")
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch databases")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (1.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else 1.0
    args.connections = [int(c) for c in args.connections.split(",")]
    args.scenarios = set(args.scenarios.split(",")) if args.scenarios else None
    if args.quick:
        args.no_readme = True
        args.all_rows_timeout = 0
    return args


def productos_git_state() -> dict[str, str]:
    """The commit and the uncommitted changes of productos/ that the run measured (others edit it too)."""

    def git(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], cwd=BENCH_DIR.parent, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": git("status", "--porcelain", "--", "productos")}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _ms(value: float | None) -> str:
    return "      n/a" if value is None else f"{value:8.2f} ms"


def preflight(server: Server, scenarios: Sequence[Scenario]) -> None:
    """One request per scenario: each must answer 2xx before wrk counts anything."""
    for scenario in scenarios:
        if scenario.method == "POST":
            response = httpx.post(
                server.base_url + scenario.first_path, content=scenario.wrk_args[2],
                headers={"content-type": "application/json"}, timeout=30,
            )  # fmt: skip
        else:
            response = httpx.get(server.base_url + scenario.first_path, timeout=30)
        if not 200 <= response.status_code < 300:
            raise RuntimeError(
                f"{server.contender.name} {scenario.method} {scenario.first_path}: "
                f"{response.status_code} {response.text[:300]}"
            )


def session(
    contender: Contender, scenarios: Sequence[Scenario], url: str, label: str, round_no: int,
    args: argparse.Namespace, workdir: Path, result: dict[str, Any],
) -> None:  # fmt: skip
    """Start the contender on ``url``, warm it up, run every scenario at every concurrency, record memory."""
    if args.scenarios:
        scenarios = [s for s in scenarios if s.key in args.scenarios]
    if not scenarios:
        return
    with Server(contender, url, workdir) as server:
        result["meta"]["commands"].setdefault(contender.key, shlex.join(server.command))
        preflight(server, scenarios)
        run_wrk(server.base_url, scenarios[0], min(args.connections), args.warmup)
        for scenario in scenarios:
            for connections in args.connections:
                restarted = not server.healthy()
                sessions_before = database_sessions(url)
                if restarted:
                    # A stall left by the previous run (the original app's event-loop-blocking pool) must not
                    # be charged to this one: start afresh, and say so.
                    log(f"  {contender.key} {contender.name}: unresponsive after the previous run; restarting")
                    server.restart()
                    result["restarts"].append({
                        "round": round_no, "contender": contender.key, "before": scenario.key,
                        "connections": connections,
                    })  # fmt: skip
                cpu_before = server.cpu_seconds()
                r = run_wrk(server.base_url, scenario, connections, args.duration)
                cpu_ms = (server.cpu_seconds() - cpu_before) * 1000 / r.requests if r.requests else None
                time.sleep(1.2)  # backends flush their session counts about once a second
                sessions_after = database_sessions(url)
                opened = None
                if sessions_before is not None and sessions_after is not None:
                    opened = sessions_after - sessions_before
                result["runs"].append({
                    "round": round_no, "contender": contender.key, "scenario": scenario.key,
                    "note": scenario.note, "restarted_before": restarted, "db_connections_opened": opened,
                    "worker_cpu_ms_per_request": None if cpu_ms is None else round(cpu_ms, 3),
                    **r.as_dict(),
                })  # fmt: skip
                log(
                    f"  {contender.key} {contender.name:16} {scenario.key:14} c{connections:<3} "
                    f"{r.rps:9,.1f} req/s  p50 {_ms(r.p50_ms)}  p99 {_ms(r.p99_ms)}  errors {r.errors}  "
                    f"new db connections {opened}  worker CPU/request {_ms(cpu_ms)}"
                )
        result["rss"].append({
            "round": round_no, "contender": contender.key, "session": label,
            "peak_rss_kib": {str(k): v for k, v in server.peak_rss_kib().items()},
        })  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    specs = contenders(dict(args.productos_env), args.pool)
    order = list(args.contenders)
    for spec in args.variant:
        derived = variant(specs["a"], spec)
        specs[derived.key] = derived
        order.append(derived.key)
    unknown = [k for k in order if k not in specs]
    if unknown:
        raise SystemExit(f"unknown contenders {unknown}: choose from {''.join(specs)}")
    date = dt.date.today().isoformat()
    stem = date + (f"-{args.tag}" if args.tag else "") + ("-quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="productos-bench-"))
    command = "python -m bench.run" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip()
    result: dict[str, Any] = {
        "meta": {
            "date": date, "stem": stem, "quick": args.quick, "command": command.strip(),
            "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
            "connections": args.connections, "order": order,
            "small_rows": SMALL_ROWS, "deep_rows": args.deep_rows,
            "machine": machine_info(), "postgres": asyncio.run(seed.server_version()),
            "productos_env": dict(args.productos_env), "pool": f"{args.pool[0]}+{args.pool[1]}",
            "workdir": str(workdir), "commands": {},
            "productos_git": productos_git_state(),
            "contenders": {
                k: {"name": specs[k].name, "description": specs[k].description, "app": specs[k].app}
                for k in order
            },
        },
        "runs": [], "rss": [], "all_rows": [], "restarts": [],
    }  # fmt: skip
    log(f"logs in {workdir}; seeding {SMALL_ROWS:,} and {args.deep_rows:,} rows")
    with ExitStack() as stack:
        small_url = stack.enter_context(seed.scratch_database(workdir, SMALL_ROWS, "bench_small", args.keep_db))
        deep_url = stack.enter_context(seed.scratch_database(workdir, args.deep_rows, "bench_deep", args.keep_db))
        for round_no in range(1, args.rounds + 1):
            log(f"round {round_no}/{args.rounds}")
            for key in order:
                contender = specs[key]
                session(contender, contender.small, small_url, "small", round_no, args, workdir, result)
                asyncio.run(seed.reset(small_url, SMALL_ROWS))
                if contender.deep:
                    session(contender, contender.deep, deep_url, "deep", round_no, args, workdir, result)
                elif contender.deep_all_rows_path and round_no == 1 and args.all_rows_timeout > 0:
                    with Server(contender, deep_url, workdir) as server:
                        log(f"  {key} {contender.name}: one GET {contender.deep_all_rows_path} of every row")
                        one = one_request(server, contender.deep_all_rows_path, args.all_rows_timeout)
                        log(f"    -> {one}")
                        result["all_rows"].append({"contender": key, **one})
                        result["rss"].append({
                            "round": round_no, "contender": key, "session": "deep",
                            "peak_rss_kib": {str(k): v for k, v in one["peak_rss_kib_sampled"].items()},
                        })  # fmt: skip
    result["summary"] = report.summarize(result["runs"])
    result["ratios"] = report.ratios(result["summary"], args.connections)
    result["goals"] = report.goals(result["summary"], result["ratios"], args.connections)
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    try:
        report.chart(result, args.out / f"{stem}.png")
    except ImportError:
        log("matplotlib is not installed (pip install 'productos[bench]'): no chart")
    section = report.markdown(result)
    if not args.no_readme:
        report.write_readme(BENCH_DIR / "README.md", section)
    print(section)
    log(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
