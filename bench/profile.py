"""Profile productos under load: ``python -m bench.profile [--scenario get_id] [--connections 64]``.

Starts productos (gunicorn, 2 workers) on a seeded scratch database, drives one endpoint with wrk, and records
every worker with ``py-spy record --nonblocking`` meanwhile (no pauses: the profile barely slows the worker).
Writes each worker's collapsed stacks (``<stem>-<scenario>-<pid>.txt``, for flamegraph.pl or speedscope) and a
summary, ``<stem>-<scenario>.md``: share of samples per layer (inclusive) and the hottest functions;
``--flamegraph`` also records one worker as an SVG flame graph (``<stem>.svg``).

py-spy samples threads that are runnable, not only those on a CPU: on a loaded machine, the wait for a CPU after
a system call (a socket write wakes the database or wrk, which may take the CPU) lands on the frame that made the
call, as self time of asyncpg's ``_do_execute`` or uvicorn's ``send``. Read those frames' self time with care;
``python -m bench.calls`` counts the Python calls of a request exactly, and bench.run's CPU per request is the
time the workers really ran.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench import seed
from bench.harness import BENCH_DIR, DEEP_ROWS, SMALL_ROWS, Server, contenders, run_wrk, variant
from bench.run import _env_pair, preflight

#: Layers of a request, as regular expressions over py-spy frames ("function (file:line)"). Inclusive: a
#: sample counts for every layer that has a frame on its stack. Indented names are parts of the layer above.
LAYERS: dict[str, str] = {
    "uvicorn HTTP protocol (parse, write)": r"uvicorn/protocols/http/|productos/entrypoints/protocol\.py",
    "  header limits (productos protocol)": r"productos/entrypoints/protocol\.py",
    "unhandled errors (productos answer_unhandled)": r"productos/http/errors\.py",
    "RequestContextMiddleware (productos)": r"productos/observability/middleware\.py",
    "  access log (logging + formatter)": r"\((?:logging/__init__|productos/observability/logging)\.py",
    "  metrics (prometheus, OTel)": r"productos/observability/metrics\.py|prometheus_client/|opentelemetry/sdk/metrics",
    "EdgeMiddleware (proxies, concurrency bound, body limit), drain": r"productos/http/(?:middleware|limits|drain)\.py",
    "starlette routing / exception middleware": (r"starlette/(?:routing|middleware/exceptions|_exception_handler)\.py"),
    "FastAPI request handling (params, deps, validation)": r"fastapi/(?:routing|dependencies/utils)\.py",
    "route functions (services/productos/routes)": r"productos/services/productos/routes\.py",
    "  JSON body (schemas, dump_json)": r"productos/services/productos/schemas\.py|productos/http/json\.py",
    "service (services/productos/service)": r"productos/services/productos/service\.py",
    "unit of work enter (checkout, pre-ping)": r"__aenter__ \(productos/infra/db/",
    "unit of work exit (commit/rollback, pool return)": r"__aexit__ \(productos/infra/db/",
    "  SQLAlchemy pool (checkout, checkin, events)": r"sqlalchemy/pool/|productos/infra/db/pool\.py",
    "repository methods": r"productos/services/productos/repository\.py",
    "  toolkit: statement cache, render (statements.py)": r"productos/infra/db/statements\.py",
    "  toolkit: result processors (types.py)": (
        r"productos/infra/db/types\.py|sqlalchemy/engine/processors|process_result_value"
    ),
    "  driver (timing, tracing, errors: driver.py)": r"productos/infra/db/driver\.py",
    "  asyncpg (driver, protocol)": r"asyncpg/",
    "  SQLAlchemy compile/cache key": (
        r"sqlalchemy/sql/(?:compiler|cache_key|elements|selectable|coercions|base|traversals|dml)\.py"
    ),
    # The caller's side (greenlet_spawn, productos' run_in_greenlet) and await_ inside. Frames that run inside the
    # greenlet hang from its first function (the pool's connect, or run_in_greenlet's _Worker._serve), not from
    # the request's layers above: py-spy sees a greenlet's own frames only.
    "  greenlet bridge (greenlet_spawn or run_in_greenlet, await_)": (
        r"sqlalchemy/util/(?:_concurrency_py3k|concurrency)\.py|run_in_greenlet \("
    ),
    "pydantic (validation, serialisation)": r"pydantic",
    "OpenTelemetry (spans, context)": r"opentelemetry/",
    "all SQLAlchemy frames": r"sqlalchemy/",
}


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def summarize(stacks: list[tuple[list[str], int]], top: int = 25) -> str:
    total = sum(count for _, count in stacks) or 1
    lines = [f"{total} samples of the workers while runnable (not idle in epoll; see the module docstring)", ""]
    lines += ["| layer (inclusive) | share of samples |", "|---|---|"]
    for name, pattern in LAYERS.items():
        regex = re.compile(pattern)
        n = sum(count for frames, count in stacks if any(regex.search(f) for f in frames))
        lines.append(f"| {name} | {100 * n / total:.1f}% |")
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines += ["", f"Hottest functions by self time (top {top})", "", "| self | function |", "|---|---|"]
    lines += [f"| {100 * n / total:.1f}% | `{f}` |" for f, n in self_time.most_common(top)]
    lines += [
        "",
        f"Hottest functions by inclusive time (top {top})",
        "",
        "| inclusive | function |",
        "|---|---|",
    ]
    lines += [f"| {100 * n / total:.1f}% | `{f}` |" for f, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    specs = contenders()
    scenarios = {s.key: s for s in (*specs["a"].small, *specs["a"].deep)}
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--scenario", choices=sorted(scenarios), default="get_id")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=15, help="seconds of load and of recording")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--contender", default="a", help="which contender to profile (default a, productos)")
    parser.add_argument("--variant", metavar="NAME:ENV=VALUE,...", help="profile this variant of productos instead")
    parser.add_argument("--productos-env", type=_env_pair, action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--tag", default="profile")
    parser.add_argument(
        "--flamegraph", action="store_true", help="then record one worker again, as an SVG flame graph (<stem>.svg)"
    )
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        raise SystemExit("py-spy is not installed: pip install 'productos[bench]'")
    contender = contenders(dict(args.productos_env))[args.contender]
    if args.variant:
        contender = variant(contender, args.variant)
    scenario = {s.key: s for s in (*contender.small, *contender.deep)}[args.scenario]
    rows = DEEP_ROWS if args.scenario.endswith("_1m") else SMALL_ROWS
    stem = f"{dt.date.today().isoformat()}-{args.tag}-{contender.name}-{scenario.key}-c{args.connections}"
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="productos-profile-"))
    with (
        seed.scratch_database(workdir, rows, "bench_profile") as url,
        Server(contender, url, workdir) as server,
    ):
        preflight(server, [scenario])
        run_wrk(server.base_url, scenario, args.connections, 2)  # warm-up
        recorders = {
            pid: subprocess.Popen(
                [py_spy, "record", "--pid", str(pid), "--duration", str(args.duration), "--rate",
                 str(args.rate), "--nonblocking", "--format", "raw", "--output", str(workdir / f"{pid}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            for pid in server.worker_pids()
        }  # fmt: skip
        time.sleep(0.5)
        load = run_wrk(server.base_url, scenario, args.connections, args.duration)
        for pid, recorder in recorders.items():
            _, err = recorder.communicate(timeout=args.duration + 60)
            if recorder.returncode != 0:
                raise RuntimeError(f"py-spy failed on {pid}: {err.decode(errors='replace')}")
        if args.flamegraph:
            # py-spy writes one format per recording: a second window of the same load, one worker, as an SVG.
            pid = server.worker_pids()[0]
            svg = args.out / f"{stem}.svg"
            grapher = subprocess.Popen(
                [py_spy, "record", "--pid", str(pid), "--duration", str(args.duration), "--rate", str(args.rate),
                 "--nonblocking", "--format", "flamegraph", "--output", str(svg)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            time.sleep(0.5)
            run_wrk(server.base_url, scenario, args.connections, args.duration)
            _, err = grapher.communicate(timeout=args.duration + 60)
            if grapher.returncode != 0:
                raise RuntimeError(f"py-spy failed on {pid}: {err.decode(errors='replace')}")
    stacks = []
    for pid in recorders:
        text = (workdir / f"{pid}.txt").read_text()
        (args.out / f"{stem}-{pid}.txt").write_text(text)
        stacks += parse_collapsed(text)
    command = shlex.join(["python", "-m", "bench.profile", *(sys.argv[1:] if argv is None else argv)])
    header = (
        f"# Profile of {contender.name}: {scenario.method} {scenario.first_path} at c{args.connections}\n\n"
        f"`{command}`; under py-spy: {load.rps:,.0f} req/s, "
        f"p50 {load.p50_ms} ms, p99 {load.p99_ms} ms, {load.errors} errors.\n\n"
    )
    summary = header + summarize(stacks)
    (args.out / f"{stem}.md").write_text(summary)
    print(summary)
    print(f"wrote {args.out / stem}.md and the collapsed stacks beside it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
