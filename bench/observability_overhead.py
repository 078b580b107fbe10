"""What observability costs: ``GET /productos/{id}`` with metrics and tracing on vs off (issue 4, item 5).

``python -m bench.observability_overhead [--rounds 3] [--duration 5] [--connections 16]``

Two productos servers run side by side, gunicorn with the tuned configuration and 2 workers each, on one
scratch PostgreSQL database of 1,000 rows: *on* (``PRODUCTOS_METRICS_ENABLED=true``,
``PRODUCTOS_TRACING_ENABLED=true``, the defaults: Prometheus multiprocess metrics, HTTP/DB/pool instruments,
spans with trace ids in the logs, no exporter) and *off* (both ``false``). Everything else is equal, the
JSON access log included. wrk measures them in alternation, on, off, on, off..., so drift on a shared machine
hits both alike: ``wrk -t2 -c16 -d5s`` per measurement, random ids in 1..1,000. The report gives each
measurement, the medians, and the ratios on/off of req/s and p99.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.seed import scratch_database

ROWS = 1_000
MODES: dict[str, dict[str, str]] = {
    "on": {"PRODUCTOS_METRICS_ENABLED": "true", "PRODUCTOS_TRACING_ENABLED": "true"},
    "off": {"PRODUCTOS_METRICS_ENABLED": "false", "PRODUCTOS_TRACING_ENABLED": "false"},
}
#: ``--bare``: also off, with no access log either (LOG_LEVEL=warning): what the JSON access line costs.
BARE = {**MODES["off"], "LOG_LEVEL": "warning"}

# Random ids per request; done() prints the figures as one JSON line.
WRK_SCRIPT = """
local lo, hi = 1, ROWS
function init(args) math.randomseed(os.time() * 1000 + math.random(1000)) end
function request() return wrk.format("GET", "/productos/" .. math.random(lo, hi)) end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('OVERHEAD_JSON {"duration_us":%d,"requests":%d,"errors":%d,"non2xx":%d,' ..
    '"p50_us":%d,"p99_us":%d}\\n', summary.duration, summary.requests,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50), latency:percentile(99)))
end
""".replace("ROWS", str(ROWS))


@dataclass
class Measurement:
    mode: str
    round: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    #: CPU time of the two workers per request (user + system): what the instrumentation costs, even when
    #: the machine is too busy for req/s to mean much.
    worker_cpu_us: float


@dataclass
class Report:
    command: str
    wrk: str
    measurements: list[Measurement] = field(default_factory=list)

    def of(self, mode: str) -> list[Measurement]:
        return [m for m in self.measurements if m.mode == mode]

    def modes(self) -> list[str]:
        return list(dict.fromkeys(m.mode for m in self.measurements))

    def summary(self) -> dict[str, Any]:
        medians = {
            mode: {
                "requests_per_s": statistics.median(m.requests_per_s for m in self.of(mode)),
                "p99_ms": statistics.median(m.p99_ms for m in self.of(mode)),
                "p50_ms": statistics.median(m.p50_ms for m in self.of(mode)),
                "worker_cpu_us": statistics.median(m.worker_cpu_us for m in self.of(mode)),
            }
            for mode in self.modes()
        }
        on, off = medians["on"], medians["off"]
        summary = {
            "medians": medians,
            "ratio_requests_per_s": on["requests_per_s"] / off["requests_per_s"],
            "ratio_p99": on["p99_ms"] / off["p99_ms"],
            "throughput_cost_percent": 100 * (1 - on["requests_per_s"] / off["requests_per_s"]),
            "ratio_worker_cpu": on["worker_cpu_us"] / off["worker_cpu_us"],
        }
        if "bare" in medians:
            bare = medians["bare"]
            summary["ratio_requests_per_s_vs_bare"] = on["requests_per_s"] / bare["requests_per_s"]
            summary["ratio_worker_cpu_vs_bare"] = on["worker_cpu_us"] / bare["worker_cpu_us"]
        return summary

    def markdown(self) -> str:
        lines = [
            f"`{self.command}`",
            "",
            f"wrk: `{self.wrk}`",
            "",
            "| round | mode | req/s | p50 ms | p99 ms | worker CPU µs/request | errors |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for m in self.measurements:
            figures = f"{m.requests_per_s:,.0f} | {m.p50_ms:.2f} | {m.p99_ms:.2f} | {m.worker_cpu_us:.0f}"
            lines.append(f"| {m.round} | {m.mode} | {figures} | {m.errors} |")
        s = self.summary()
        lines += [
            "",
            "| median | req/s | p50 ms | p99 ms | worker CPU µs/request |",
            "|---|---:|---:|---:|---:|",
        ]
        for mode, figures in s["medians"].items():
            cells = (
                f"{figures['requests_per_s']:,.0f} | {figures['p50_ms']:.2f} | {figures['p99_ms']:.2f} | "
                f"{figures['worker_cpu_us']:.0f}"
            )
            lines.append(f"| {mode} | {cells} |")
        lines += [
            "",
            f"on/off: req/s x {s['ratio_requests_per_s']:.3f} ({s['throughput_cost_percent']:+.1f}% cost), "
            f"p99 x {s['ratio_p99']:.3f}, worker CPU per request x {s['ratio_worker_cpu']:.3f}",
        ]
        if "ratio_requests_per_s_vs_bare" in s:
            lines.append(
                f"on/bare (no access log either): req/s x {s['ratio_requests_per_s_vs_bare']:.3f}, "
                f"worker CPU per request x {s['ratio_worker_cpu_vs_bare']:.3f}"
            )
        return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def gunicorn(workdir: Path, mode: str, env: Mapping[str, str]) -> Iterator[tuple[str, int]]:
    """productos under gunicorn (tuned config, 2 workers); its JSON logs go to a file, as on a host."""
    port = free_port()
    log = (workdir / f"gunicorn-{mode}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:productos.gunicorn_conf", "productos.main:app"],
        cwd=workdir,
        env={**os.environ, **env, "APP_HOST": "127.0.0.1", "APP_PORT": str(port), "WORKERS": "2"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn ({mode}) exited: see {log.name}")
            try:
                if httpx.get(f"{base_url}/productos/1", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn ({mode}) did not start: see {log.name}")
            time.sleep(0.1)
        yield base_url, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def workers_cpu_seconds(master: int) -> float:
    """User + system CPU seconds of the master's children (the workers) so far."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    ticks = 0
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def run_wrk(args: list[str]) -> dict[str, Any]:
    output = subprocess.run(args, check=True, capture_output=True, text=True, timeout=300).stdout
    match = re.search(r"^OVERHEAD_JSON (.*)$", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no figures from wrk:\n{output}")
    figures: dict[str, Any] = json.loads(match.group(1))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="measurements per mode, alternated (3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement (5)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server (2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--bare", action="store_true", help="a third server: off and no access log")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is required (apt-get install wrk)", file=sys.stderr)
        return 2

    command = "python -m bench.observability_overhead " + " ".join(argv if argv is not None else sys.argv[1:])
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="productos-obs-bench-")))
        script = workdir / "get.lua"
        script.write_text(WRK_SCRIPT)
        url = stack.enter_context(scratch_database(workdir, ROWS, label="obs_bench"))
        modes = {**MODES, **({"bare": BARE} if args.bare else {})}
        servers = {
            mode: stack.enter_context(gunicorn(workdir, mode, {"DATABASE_URL": url, **env}))
            for mode, env in modes.items()
        }
        assert httpx.get(f"{servers['on'][0]}/metrics").status_code == 200
        assert httpx.get(f"{servers['off'][0]}/metrics").status_code == 404

        def wrk_args(base_url: str, seconds: int) -> list[str]:
            return [
                wrk,
                f"-t{args.threads}",
                f"-c{args.connections}",
                f"-d{seconds}s",
                "--timeout=10s",
                "-s",
                str(script),
                base_url,
            ]

        report = Report(
            command=command.strip(),
            wrk=" ".join(wrk_args("URL", args.duration)[1:]).replace(str(script), "get.lua"),
        )
        for base_url, _ in servers.values():
            run_wrk(wrk_args(base_url, args.warmup))
        for round_ in range(1, args.rounds + 1):
            for mode, (base_url, master) in servers.items():
                cpu_before = workers_cpu_seconds(master)
                figures = run_wrk(wrk_args(base_url, args.duration))
                cpu = workers_cpu_seconds(master) - cpu_before
                measurement = Measurement(
                    mode=mode,
                    round=round_,
                    requests_per_s=figures["requests"] / (figures["duration_us"] / 1e6),
                    p50_ms=figures["p50_us"] / 1e3,
                    p99_ms=figures["p99_us"] / 1e3,
                    errors=figures["errors"] + figures["non2xx"],
                    worker_cpu_us=1e6 * cpu / max(1, figures["requests"]),
                )
                report.measurements.append(measurement)
                print(
                    f"round {round_} {mode:>3}: {measurement.requests_per_s:8,.0f} req/s  "
                    f"p99 {measurement.p99_ms:6.2f} ms  "
                    f"worker CPU {measurement.worker_cpu_us:5.0f} µs/request  errors {measurement.errors}",
                    flush=True,
                )
    print()
    print(report.markdown())
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "command": report.command,
                    "wrk": report.wrk,
                    "measurements": [m.__dict__ for m in report.measurements],
                    **report.summary(),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
