"""HAProxy in front of gunicorn processes: the ALB's stand-in, started by the tests on free ports.

Like the ALB, it keeps connections to the servers alive, sends ``GET /health`` to each server on a fresh
connection every ``inter`` ms, takes a server out after ``fall`` failed checks and back after ``rise`` passed
ones, and routes only to servers in service. ``retries 0``: a request that fails on its way to a server (a
refused connection, a connection closed under it) fails; nothing hides it. Only failed requests are logged.

Debian's ``haproxy`` package provides the binary (``.ci/run`` installs it when it is missing).
"""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from tests.integration.tcp_proxy import free_port

CONFIG = """\
global
    maxconn 4096
    stats socket {socket} mode 600 level admin
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    option dontlog-normal
    retries 0
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
    timeout check {check_timeout}ms

frontend web
    bind 127.0.0.1:{port}
    default_backend app

backend app
    balance roundrobin
    option httpchk
    http-check send meth GET uri /health
    http-check expect status 200
    default-server inter {inter}ms fall {fall} rise {rise}
{servers}
"""


class HAProxy:
    """``haproxy -db -f <config>`` in ``workdir``, balancing over ``servers`` (name → port on 127.0.0.1).

    ``with HAProxy(...) as proxy`` starts it and waits until it answers on its stats socket; at the end it is
    stopped. ``proxy.base_url`` is the frontend.
    """

    def __init__(
        self,
        workdir: Path,
        servers: Mapping[str, int],
        *,
        inter_ms: int = 1000,
        fall: int = 2,
        rise: int = 2,
        check_timeout_ms: int = 1000,
    ) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            raise RuntimeError("haproxy is not installed: apt-get install -y haproxy (.ci/run does)")
        self.binary = binary
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.inter_ms, self.fall, self.rise = inter_ms, fall, rise
        self.socket_path = workdir / f"haproxy-{self.port}.sock"
        self.config_path = workdir / f"haproxy-{self.port}.cfg"
        self.log_path = workdir / f"haproxy-{self.port}.log"
        lines = "\n".join(f"    server {name} 127.0.0.1:{port} check" for name, port in servers.items())
        self.config_path.write_text(
            CONFIG.format(
                socket=self.socket_path,
                port=self.port,
                inter=inter_ms,
                fall=fall,
                rise=rise,
                check_timeout=check_timeout_ms,
                servers=lines,
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> HAProxy:
        subprocess.run([self.binary, "-c", "-q", "-f", str(self.config_path)], check=True, capture_output=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [self.binary, "-db", "-f", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                self.states_now()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"haproxy did not start:\n{self.output()}") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def command(self, line: str) -> str:
        """One command on the stats socket (``show stat``, ``disable server app/a``...); its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the backend's servers: server name → column → value."""
        text = self.command("show stat").lstrip("# ")
        return {row["svname"]: row for row in csv.DictReader(io.StringIO(text)) if row["pxname"] == "app"}

    def states_now(self) -> dict[str, str]:
        """Each server's state as HAProxy routes by it: ``UP``, ``DOWN``, ``UP 1/2`` (going down)..."""
        return {name: row["status"] for name, row in self.stats().items() if name not in ("FRONTEND", "BACKEND")}

    async def wait_state(self, name: str, state: str, within: float) -> float:
        """Poll until server ``name`` is in ``state`` (``UP`` or ``DOWN``); the monotonic time it was seen."""
        deadline = time.monotonic() + within
        while True:
            current = await asyncio.to_thread(self.states_now)
            if current.get(name) == state:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise AssertionError(f"server {name} not {state} within {within} s: {current}\n{self.output()}")
            await asyncio.sleep(0.05)
