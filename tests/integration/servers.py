"""Real server processes for end-to-end tests: gunicorn with the app, as an operator would start it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from tests.integration.tcp_proxy import free_port

TUNED = ("-c", "python:productos.gunicorn_conf")
PLAIN = ("-k", "uvicorn.workers.UvicornWorker")


class Gunicorn:
    """``python -m gunicorn <args> productos.main:app`` (or ``command``) in a scratch directory, output captured
    to a file."""

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str],
        args: Sequence[str] = TUNED,
        app: str = "productos.main:app",
        workers: int = 2,
        command: Sequence[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"gunicorn-{self.port}.log"
        self.workdir = workdir
        self.env = {
            **os.environ,
            "APP_HOST": "127.0.0.1",
            "APP_PORT": str(self.port),
            "WORKERS": str(workers),
            **env,
        }
        self.command = list(command) if command else [sys.executable, "-m", "gunicorn", *args, app]
        if args == PLAIN and not command:
            self.command[3:3] = ["-b", f"127.0.0.1:{self.port}", "-w", str(workers), "--no-control-socket"]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Gunicorn:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.base_url}/health/live", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not become ready:\n{self.output()}")

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")
