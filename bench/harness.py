"""The pieces of the benchmark: contenders, gunicorn processes, wrk runs, peak memory, the machine.

``bench.run`` puts them together; ``tests/bench`` exercises them cheaply.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from productos.settings import Settings

if TYPE_CHECKING:
    from productos.testing import PgBouncer

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WRK_SCRIPT = BENCH_DIR / "wrk" / "bench.lua"
WORKERS = 2
#: The small table: GET by id draws ids from 1..SMALL_ROWS.
SMALL_ROWS = 1_000
DEEP_ROWS = 1_000_000
#: The deep page starts after a random id in this range (so about 990,000 rows in).
DEEP_AFTER = (985_000, 995_000)
POST_BODY = '{"nombre":"Teclado mecánico","descripcion":"Carga de wrk","precio":49.99,"stock":3}'
PEDIDO_BODY = '{"producto_id":7,"cantidad":2}'
#: examples/pedidos, the second service, importable by its gunicorn workers.
PEDIDOS_DIR = REPO_ROOT / "examples" / "pedidos"


@dataclass(frozen=True)
class Scenario:
    """One endpoint as a contender serves it: wrk args ``get <template> lo hi`` or ``post <path> body``."""

    key: str
    wrk_args: tuple[str, ...]
    note: str = ""

    @property
    def first_path(self) -> str:
        """A concrete path to check before the run (``{n}`` replaced by the lowest value)."""
        if self.wrk_args[0] == "post":
            return self.wrk_args[1]
        return self.wrk_args[1].replace("{n}", self.wrk_args[2])

    @property
    def method(self) -> str:
        return "POST" if self.wrk_args[0] == "post" else "GET"


def get_scenario(key: str, template: str, lo: int = 1, hi: int = 1, note: str = "") -> Scenario:
    return Scenario(key, ("get", template, str(lo), str(hi)), note)


def post_scenario(path: str, body: str = POST_BODY) -> Scenario:
    return Scenario("post", ("post", path, body))


#: Scenario keys in report order. ``list_50`` and ``post`` run on the 1,000-row table, the ``*_1m`` on the
#: million-row one.
SCENARIOS = ("get_id", "list_50", "post", "first_page_1m", "deep_page_1m")
SCENARIO_TITLES = {
    "get_id": "GET /productos/{id}",
    "list_50": "GET /productos?limit=50",
    "post": "POST /productos",
    "first_page_1m": "first page of 1M rows",
    "deep_page_1m": "page after id ~990,000 of 1M",
}


@dataclass(frozen=True)
class Contender:
    key: str
    name: str
    description: str
    app: str
    #: gunicorn arguments before the app; ``{port}`` is replaced.
    gunicorn_args: tuple[str, ...]
    small: tuple[Scenario, ...]
    deep: tuple[Scenario, ...]
    #: Instead of wrk on the million-row table: one request whose path lists every row (no pagination).
    deep_all_rows_path: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    #: prometheus-client's multiprocess mode set up from outside, as its docs say: a fresh, empty
    #: ``PROMETHEUS_MULTIPROC_DIR`` for each start (in /dev/shm, where productos puts its own), deleted after.
    prometheus_multiproc_dir: bool = False
    #: What must answer 200 before the contender counts as ready (and as healthy between runs).
    ready_path: str = "/productos/1"
    #: Through PgBouncer (transaction pooling, Debian's package, its default pool of 20 server connections),
    #: started by the server for each start in front of the database's server: ``DATABASE_URL`` points at it.
    pgbouncer: bool = False

    def command(self, port: int) -> list[str]:
        args = [a.replace("{port}", str(port)) for a in self.gunicorn_args]
        return [sys.executable, "-m", "gunicorn", *args, self.app]


def _uvicorn_worker_args() -> tuple[str, ...]:
    return (
        "-w", str(WORKERS), "-k", "uvicorn_worker.UvicornWorker", "-b", "127.0.0.1:{port}",
        "--no-control-socket", "--timeout", "60",
    )  # fmt: skip


def _keyset(prefix: str = "/productos") -> tuple[tuple[Scenario, ...], tuple[Scenario, ...]]:
    small = (
        get_scenario("get_id", "/productos/{n}", 1, SMALL_ROWS),
        get_scenario("list_50", f"{prefix}?limit=50"),
        post_scenario(prefix),
    )
    deep = (
        get_scenario("first_page_1m", f"{prefix}?limit=50"),
        get_scenario("deep_page_1m", f"{prefix}?after={{n}}&limit=50", *DEEP_AFTER),
    )
    return small, deep


#: Every contender's pool per worker, (size, overflow): productos' defaults, so (a) runs as shipped and every
#: other contender gets the same bounds (asyncpg pools: min size, max size + overflow; SQLAlchemy pools: the same
#: size and overflow). ``bench.run --pool SIZE+OVERFLOW`` sets another.
DEFAULT_POOL = (
    int(Settings.model_fields["db_pool_size"].default),
    int(Settings.model_fields["db_max_overflow"].default),
)


def pool_env(pool: tuple[int, int]) -> dict[str, str]:
    """The environment that sets ``pool`` for every kind of contender."""
    size, overflow = pool
    return {
        "DB_POOL_SIZE": str(size),
        "DB_MAX_OVERFLOW": str(overflow),
        "BENCH_POOL_MIN": str(size),
        "BENCH_POOL_MAX": str(size + overflow),
    }


#: The stop between sessions needs no drain (no balancer to move): it would only add its seconds to each stop.
_NO_DRAIN = {"PRODUCTOS_DRAIN_SECONDS": "0"}


def contenders(
    productos_env: Mapping[str, str] | None = None, pool: tuple[int, int] = DEFAULT_POOL
) -> dict[str, Contender]:
    """The contenders, by key: a..g (g: productos through PgBouncer), and p (pedidos, the second service on
    productos), each with the pool ``pool`` per worker (``productos_env`` may still set productos' own)."""
    small, deep = _keyset()
    specs = {
        "a": Contender(
            "a", "productos", "productos itself: productos.main:app with its tuned gunicorn config",
            "productos.main:app", ("-c", "python:productos.gunicorn_conf"), small, deep,
            env={"WORKERS": str(WORKERS), **_NO_DRAIN, **(productos_env or {})},
        ),
        "b": Contender(
            "b", "raw-asgi", "raw ASGI callable + asyncpg pool, no framework",
            "bench.contenders.raw_asgi:app", _uvicorn_worker_args(), small, deep,
        ),
        "c": Contender(
            "c", "fastapi-asyncpg", "FastAPI + raw asyncpg pool, no ORM",
            "bench.contenders.fastapi_asyncpg:app", _uvicorn_worker_args(), small, deep,
        ),
        "d": Contender(
            "d", "fastapi-orm", "typical FastAPI + SQLAlchemy asyncio ORM + pydantic response_model",
            "bench.contenders.fastapi_orm:app", _uvicorn_worker_args(),
            (*small[:1], get_scenario("list_50", "/productos?limit=50"), post_scenario("/productos")),
            (
                get_scenario("first_page_1m", "/productos?limit=50"),
                get_scenario(
                    "deep_page_1m", "/productos?skip={n}&limit=50", *DEEP_AFTER, note="OFFSET pagination"
                ),
            ),
        ),
        "e": Contender(
            "e", "original", "the original app's shape: sync SQLAlchemy/psycopg2 in async def, no pagination",
            "bench.contenders.original:app", _uvicorn_worker_args(),
            (
                get_scenario("get_id", "/productos/{n}", 1, SMALL_ROWS),
                get_scenario("list_50", "/productos/", note="no pagination: lists all 1,000 rows"),
                post_scenario("/productos/"),
            ),
            (),
            deep_all_rows_path="/productos/",
        ),
        "f": Contender(
            "f", "fastapi-instrumented",
            "FastAPI + raw asyncpg pool as (c), with prometheus-fastapi-instrumentator (multiprocess), "
            "OpenTelemetry FastAPI and asyncpg instrumentation, a JSON access log (python-json-logger)",
            "bench.contenders.fastapi_instrumented:app",
            ("-c", "python:bench.contenders.fastapi_instrumented_gunicorn", *_uvicorn_worker_args()), small, deep,
            prometheus_multiproc_dir=True,
        ),
        "g": Contender(
            "g", "productos-pgbouncer",
            "productos as (a), through PgBouncer in transaction pooling mode (DB_POOLER=transaction)",
            "productos.main:app", ("-c", "python:productos.gunicorn_conf"), small, deep,
            env={"WORKERS": str(WORKERS), "DB_POOLER": "transaction", **_NO_DRAIN, **(productos_env or {})},
            pgbouncer=True,
        ),
        "p": Contender(
            "p", "pedidos", "examples/pedidos: a service on productos' public API, SQLAlchemy Core statements",
            "pedidos.main:app", ("-c", "python:productos.gunicorn_conf"),
            (
                get_scenario("get_id", "/pedidos/{n}", 1, SMALL_ROWS),
                get_scenario("list_50", "/pedidos?limit=50"),
                post_scenario("/pedidos", PEDIDO_BODY),
            ),
            (),
            env={"WORKERS": str(WORKERS), "PYTHONPATH": str(PEDIDOS_DIR), **_NO_DRAIN, **(productos_env or {})},
            ready_path="/pedidos/1",
        ),
    }  # fmt: skip
    return {key: dataclasses.replace(spec, env={**pool_env(pool), **spec.env}) for key, spec in specs.items()}


def variant(base: Contender, spec: str) -> Contender:
    """A contender derived from ``base`` by ``NAME:ENV=VALUE,...``; ``APP=module:attr`` swaps the app.

    ``pool30:DB_POOL_SIZE=30,DB_MAX_OVERFLOW=0`` runs productos with other settings;
    ``core:APP=bench.contenders.productos_variants:sqlalchemy_core`` runs another app object.
    """
    name, _, pairs = spec.partition(":")
    env, app = dict(base.env), base.app
    for pair in filter(None, pairs.split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"variant {spec!r}: expected ENV=VALUE, got {pair!r}")
        if key == "APP":
            app = value
        else:
            env[key] = value
    return dataclasses.replace(
        base, key=name, name=f"{base.name}+{name}", description=f"{base.name} with {pairs}", app=app, env=env
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A contender under gunicorn, output to a log file; ready once its ``ready_path`` answers 200."""

    def __init__(self, contender: Contender, database_url: str, workdir: Path, env: Mapping[str, str] | None = None):
        self.contender = contender
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.command = contender.command(self.port)
        self.log_path = workdir / f"{contender.key}-{contender.name}-{self.port}.log"
        self.workdir = workdir
        pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        self.env = {
            **os.environ,
            "PYTHONPATH": pythonpath,
            "DATABASE_URL": database_url,
            "APP_HOST": "127.0.0.1",
            "APP_PORT": str(self.port),
            **contender.env,
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.multiproc_dir: Path | None = None
        self.database_url = database_url
        self.pgbouncer: PgBouncer | None = None

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        if self.contender.prometheus_multiproc_dir:
            shm = Path("/dev/shm")  # in memory, as productos keeps its own metrics files
            base = shm if shm.is_dir() and os.access(shm, os.W_OK) else self.workdir
            self.multiproc_dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.contender.key}-metrics-", dir=base))
            self.env["PROMETHEUS_MULTIPROC_DIR"] = str(self.multiproc_dir)
        if self.contender.pgbouncer:
            from sqlalchemy.engine import make_url

            from productos.testing import PgBouncer

            self.pgbouncer = PgBouncer(self.database_url, pool_size=20)
            self.pgbouncer.start()
            self.env["DATABASE_URL"] = self.pgbouncer.url(make_url(self.database_url).database or "")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()  # its metrics directory
                raise RuntimeError(f"{self.contender.name} exited with {self.process.returncode}:\n{self.output()}")
            try:
                ready = httpx.get(self.base_url + self.contender.ready_path, timeout=2).status_code == 200
                if ready and self.ready_workers():
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.contender.name} did not become ready:\n{self.output()}")

    def healthy(self, timeout: float = 3) -> bool:
        """Answers ``GET <ready_path>`` within ``timeout`` with all its workers up."""
        try:
            ok = httpx.get(self.base_url + self.contender.ready_path, timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False
        return ok and self.ready_workers()

    def restart(self) -> None:
        self.stop()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.command = self.contender.command(self.port)
        self.env["APP_PORT"] = str(self.port)
        self.start()

    def ready_workers(self) -> bool:
        return len(self.worker_pids()) >= WORKERS

    def worker_pids(self) -> list[int]:
        if self.process is None:
            return []
        return child_pids(self.process.pid)

    def peak_rss_kib(self) -> dict[int, int]:
        """VmHWM (peak resident set, KiB) of each live worker."""
        return {pid: kib for pid in self.worker_pids() if (kib := proc_status_kib(pid, "VmHWM")) is not None}

    def cpu_seconds(self) -> float:
        """User + system CPU time of the live workers (a noise-robust cost: CPU per request)."""
        return sum(proc_cpu_seconds(pid) for pid in self.worker_pids())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.multiproc_dir is not None:
            shutil.rmtree(self.multiproc_dir, ignore_errors=True)
            self.multiproc_dir = None
        if self.pgbouncer is not None:
            self.pgbouncer.__exit__(None, None, None)
            self.pgbouncer = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def database_sessions(url: str) -> int | None:
    """Sessions ever opened on ``url``'s database (pg_stat_database.sessions, flushed about once a second).

    None when it cannot be read: the server is shared, and may be out of connections just then.
    """
    import asyncio

    import asyncpg  # type: ignore[import-untyped]

    async def read() -> int:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return int(await conn.fetchval("SELECT sessions FROM pg_stat_database WHERE datname = current_database()"))
        finally:
            await conn.close()

    for attempt in range(3):
        try:
            return asyncio.run(read())
        except (OSError, TimeoutError, asyncpg.PostgresError):
            time.sleep(0.5 * (attempt + 1))
    return None


def child_pids(pid: int) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids.extend(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return sorted(set(pids))


def proc_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 of proc(5), utime and stime, in clock ticks; the split starts at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid: int, key: str) -> int | None:
    """A ``kB`` line of ``/proc/<pid>/status`` (VmHWM, VmRSS), or None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


@dataclass
class WrkResult:
    connections: int
    duration_s: float
    requests: int
    rps: float
    #: Latencies are None when no request completed within the run.
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    errors: int
    error_detail: dict[str, int]
    command: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def wrk_command(
    base_url: str,
    scenario: Scenario,
    connections: int,
    duration: float,
    threads: int = 2,
    timeout: str = "2s",
) -> list[str]:
    return [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", f"--timeout={timeout}",
        "-s", str(WRK_SCRIPT), base_url, "--", *scenario.wrk_args,
    ]  # fmt: skip


def parse_wrk(stdout: str) -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return dict(json.loads(line.removeprefix("BENCH_JSON ")))
    raise ValueError(f"no BENCH_JSON line in wrk's output:\n{stdout}")


def run_wrk(base_url: str, scenario: Scenario, connections: int, duration: float, threads: int = 2) -> WrkResult:
    """Run wrk; errors are non-2xx/3xx statuses plus socket errors (connect, read, write, timeout).

    wrk's timeout is 2 s (its default): a request unanswered after 2 s counts as a timeout error (once per 2 s
    check while it waits) and its latency is left out of the percentiles.
    """
    command = wrk_command(base_url, scenario, connections, duration, threads)
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    raw = parse_wrk(done.stdout)
    seconds = raw["duration_us"] / 1e6
    latency: dict[str, float] = raw["latency_us"]

    def ms(key: str) -> float | None:
        return latency[key] / 1000 if raw["requests"] else None

    return WrkResult(
        connections=connections,
        duration_s=round(seconds, 3),
        requests=raw["requests"],
        rps=round(raw["requests"] / seconds, 1) if seconds else 0.0,
        p50_ms=ms("p50"),
        p90_ms=ms("p90"),
        p99_ms=ms("p99"),
        max_ms=ms("max"),
        errors=sum(raw["errors"].values()),
        error_detail=raw["errors"],
        command=shlex.join(command),
    )


def one_request(server: Server, path: str, timeout: float) -> dict[str, Any]:
    """One GET, streamed and timed, with the workers' peak memory sampled while it runs (a worker the
    request gets killed still counts)."""
    peak: dict[int, int] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for pid in server.worker_pids():
                rss = proc_status_kib(pid, "VmRSS") or 0
                peak[pid] = max(peak.get(pid, 0), rss)
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    result: dict[str, Any] = {"path": path, "timeout_s": timeout}
    try:
        size = 0
        with httpx.stream("GET", server.base_url + path, timeout=timeout) as response:
            for chunk in response.iter_bytes():
                size += len(chunk)
        result.update(status=response.status_code, bytes=size)
    except httpx.HTTPError as exc:
        result.update(status=None, error=f"{type(exc).__name__}: {exc}"[:300])
    result["seconds"] = round(time.perf_counter() - start, 3)
    stop.set()
    sampler.join()
    result["peak_rss_kib_sampled"] = dict(sorted(peak.items()))
    result["peak_rss_kib"] = server.peak_rss_kib()
    return result


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    import fastapi
    import sqlalchemy
    import uvicorn

    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kib / 1024**2, 1) if mem_kib else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version.strip(),
        "fastapi": fastapi.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "uvicorn": uvicorn.__version__,
    }


def check_same_row(servers: Sequence[Server], producto_id: int = 1) -> dict[str, Any]:
    """GET the same row from each server; return the bodies by contender name."""
    return {s.contender.name: httpx.get(f"{s.base_url}/productos/{producto_id}", timeout=5).json() for s in servers}
