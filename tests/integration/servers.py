"""Real server processes for end-to-end tests: gunicorn with the app, as an operator would start it.

Every test that runs gunicorn goes through :class:`Gunicorn`: one place builds the command line and the
environment, picks the port, waits for readiness, captures the output and stops the process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from tests.integration.tcp_proxy import free_port

#: ``gunicorn -c python:productos.gunicorn_conf``: bind and workers come from APP_HOST, APP_PORT and WORKERS.
TUNED = ("-c", "python:productos.gunicorn_conf")
#: ``gunicorn -k uvicorn.workers.UvicornWorker``: no productos configuration, bind and workers on the command line.
PLAIN = ("-k", "uvicorn.workers.UvicornWorker")


class Gunicorn:
    """``python -m gunicorn <args> <app>`` on a free port of 127.0.0.1, run in ``workdir``, its stdout and stderr
    captured to one file there.

    Args:
        workdir: the process's working directory; the log file goes there too.
        env: overrides of the test process's environment (after APP_HOST, APP_PORT, WORKERS and a drain of 1 s).
        args: ``TUNED`` or ``PLAIN``.
        app: the ASGI application, ``module:attribute``.
        workers: how many workers.
        command: another command line that serves on APP_PORT (``productos serve``), instead of gunicorn's.
        port: the port, for a server that takes over another's (a restart); a free one by default.

    ``with Gunicorn(...) as server`` starts it, waits until ``/health/live`` answers 200, and at the end stops it
    with SIGTERM (SIGKILL if it has not exited 40 s later). A server that exits or is not ready within 30 s
    fails the test with its output, killed first. For a run that must fail to boot, ``run()`` waits for the
    exit instead.
    """

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        *,
        args: Sequence[str] = TUNED,
        app: str = "productos.main:app",
        workers: int = 2,
        command: Sequence[str] | None = None,
        port: int | None = None,
    ) -> None:
        if tuple(args) not in (TUNED, PLAIN):
            raise ValueError(f"args must be TUNED or PLAIN, not {args!r}")
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"gunicorn-{self.port}.log"
        restart = 1
        while self.log_path.exists():  # an earlier server on this port keeps its log
            restart += 1
            self.log_path = workdir / f"gunicorn-{self.port}-{restart}.log"
        self.workdir = workdir
        self.env = {
            **os.environ,
            "APP_HOST": "127.0.0.1",
            "APP_PORT": str(self.port),
            "WORKERS": str(workers),
            # No balancer watches these servers: a short drain keeps every stop quick (test_drain sets its own).
            "PRODUCTOS_DRAIN_SECONDS": "1",
            **(env or {}),
        }
        if command is not None:
            self.command = list(command)
        elif tuple(args) == PLAIN:
            # Without the tuned configuration nothing reads APP_PORT or WORKERS, and gunicorn's management
            # socket (a fixed per-user path) would clash with any other gunicorn on the machine.
            bind = ["-b", f"127.0.0.1:{self.port}", "-w", str(workers), "--no-control-socket"]
            self.command = [sys.executable, "-m", "gunicorn", *args, *bind, app]
        else:
            self.command = [sys.executable, "-m", "gunicorn", *args, app]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Gunicorn:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        # One that ignores SIGTERM is killed; what the test asserts about the exit (its status, its output)
        # says the rest.
        if self.running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.stop()

    def start(self) -> None:
        """Start the process and return at once (``__enter__`` also waits until it is ready)."""
        if self.process is not None:
            raise RuntimeError("this gunicorn was started already")
        with self.log_path.open("wb") as log:
            # A process group of its own, so that a failure can kill the workers with the master.
            self.process = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 30) -> None:
        """Return once ``GET /health/live`` answers 200; RuntimeError with the output if it exits or times out."""
        process = self._started()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.base_url}/health/live", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not become ready:\n{self.output()}")

    def run(self, timeout: float = 60) -> int:
        """Start, wait for the exit (a boot that fails), and return the exit status; killed and
        ``TimeoutExpired`` if it is still running after ``timeout`` s."""
        self.start()
        return self.wait(timeout)

    def terminate(self) -> None:
        """Send SIGTERM (gunicorn's graceful shutdown) and return at once."""
        process = self._started()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)

    def reload(self) -> None:
        """Send SIGHUP: gunicorn's graceful reload (new workers, the old ones stopped with SIGTERM)."""
        self._started().send_signal(signal.SIGHUP)

    @property
    def pid(self) -> int:
        """The master's process id."""
        return self._started().pid

    def worker_pids(self) -> set[int]:
        """The master's child processes now (its workers)."""
        pid = self.pid
        try:
            return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
        except FileNotFoundError:
            return set()

    def wait(self, timeout: float) -> int:
        """Wait for the exit and return the exit status; killed and ``TimeoutExpired`` after ``timeout`` s."""
        process = self._started()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM, then :meth:`wait`: the exit status."""
        self.terminate()
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the master and its workers if it is running (the clean-up of a failure)."""
        if self.running:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status once it has exited, else None."""
        return None if self.process is None else self.process.poll()

    def output(self) -> str:
        """Everything it has written to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _started(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            raise RuntimeError("this gunicorn has not been started")
        return self.process
