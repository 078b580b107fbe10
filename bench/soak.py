"""Soak: productos under steady mixed load for minutes, sampling what would leak.

``python -m bench.soak [--minutes 10] [--connections 32] [--interval 10]``: a scratch database (1,000 products),
productos under gunicorn with its tuned configuration (2 workers), and wrk in back-to-back windows of
``--interval`` seconds cycling through GET by id, the 50-row page and POST. After each window: every worker's
resident memory (VmRSS), open file descriptors, the database's connections (``pg_stat_activity``), the
Prometheus multiprocess files, and the window's requests, errors and p99. At the end: the first and last
samples side by side, whether the metrics directory went away with the server, and a JSON file in
bench/results/.

What "flat" means here: after the first two windows (warm-up), RSS within a few MiB and the same descriptors and
connections; anything that grows every window is a leak.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bench import seed
from bench.harness import BENCH_DIR, SMALL_ROWS, contenders, proc_status_kib, run_wrk

_METRICS_DIR = re.compile(r"Prometheus multiprocess directory (\S+?)\"")


def _metrics_dir(server_log: str) -> str:
    """The server's own multiprocess directory, as its master logged it at start."""
    found = _METRICS_DIR.search(server_log)
    if found is None:
        raise RuntimeError("the server did not log its Prometheus multiprocess directory")
    return found.group(1)


def _fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


async def _db_connections(url: str) -> int:
    database = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(seed.ADMIN_URL, timeout=5)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database))
    finally:
        await conn.close()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to load the server (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds per load window (default 10)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="where the JSON goes")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    productos = contenders()["a"]
    scenarios = productos.small
    workdir = Path(tempfile.mkdtemp(prefix="productos-soak-"))
    samples: list[dict[str, Any]] = []
    with seed.scratch_database(workdir, SMALL_ROWS, "soak") as url:
        from bench.harness import Server

        with Server(productos, url, workdir) as server:
            with server.log_path.open(errors="replace") as log:
                own_dir = _metrics_dir(log.read(65536))
            started = time.monotonic()
            window = 0
            while time.monotonic() - started < args.minutes * 60:
                scenario = scenarios[window % len(scenarios)]
                result = run_wrk(server.base_url, scenario, args.connections, args.interval)
                pids = server.worker_pids()
                sample = {
                    "window": window,
                    "elapsed_s": round(time.monotonic() - started, 1),
                    "scenario": scenario.key,
                    "requests": result.requests,
                    "errors": result.errors,
                    "p99_ms": result.p99_ms,
                    "rss_mib": {str(pid): round((proc_status_kib(pid, "VmRSS") or 0) / 1024, 1) for pid in pids},
                    "fds": {str(pid): _fds(pid) for pid in pids},
                    "db_connections": asyncio.run(_db_connections(url)),
                    "metrics_files": len(os.listdir(own_dir)),
                }
                samples.append(sample)
                print(json.dumps(sample), flush=True)
                window += 1
        time.sleep(1)
        leftover = [own_dir] if os.path.exists(own_dir) else []
    first, last = samples[min(2, len(samples) - 1)], samples[-1]
    summary = {
        "date": dt.date.today().isoformat(),
        "minutes": args.minutes,
        "connections": args.connections,
        "windows": len(samples),
        "requests": sum(s["requests"] for s in samples),
        "errors": sum(s["errors"] for s in samples),
        "after_warmup": first,
        "last": last,
        "metrics_dir_left_behind": leftover,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{summary['date']}-soak.json"
    path.write_text(json.dumps({"summary": summary, "samples": samples}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
