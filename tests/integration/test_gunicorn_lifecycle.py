"""The tuned configuration's metrics directory goes whichever way gunicorn's master exits: when it cannot bind
its port, and, at the next start, when it was killed (test_drain.py checks a clean stop)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.servers import Gunicorn

pytestmark = pytest.mark.slow


def test_the_metrics_directory_goes_when_gunicorn_cannot_bind_its_port(tmp_path: Path) -> None:
    """on_exit runs only when the master halts: a failed bind exits before, and left the directory behind."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = Gunicorn(tmp_path, {}, port=taken.getsockname()[1])
        status = server.run(timeout=60)
    output = server.output()
    assert status != 0 and "Connection in use" in output, output
    made = re.search(r"Prometheus multiprocess directory (/[^\s\"]*productos-metrics-[^\s\"]+)", output)
    assert made is not None, output
    assert not Path(made.group(1)).exists()


def test_a_start_removes_the_directories_of_masters_that_were_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL runs no exit handler: the next start removes what a dead master left, and nothing of a live one."""
    from productos.observability.metrics import MULTIPROC_ENV, create_multiprocess_dir, remove_multiprocess_dir

    # create_multiprocess_dir() sets the variable in os.environ; setenv first so the test's end restores it (a
    # removed directory left in the environment would break every later process that inherits it).
    monkeypatch.setenv(MULTIPROC_ENV, "")
    monkeypatch.delenv(MULTIPROC_ENV)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    first = create_multiprocess_dir()
    base = Path(first).parent
    orphan = base / f"productos-metrics-{dead_pid}-orphan"
    alive = base / f"productos-metrics-{os.getpid()}-alive"
    for path in (orphan, alive):
        path.mkdir()
        (path / "counter_1.db").write_bytes(b"x")
    try:
        second = create_multiprocess_dir()
        assert not orphan.exists()
        assert alive.exists() and Path(first).exists() and Path(second).exists()
    finally:
        for path in (first, second, str(alive)):
            remove_multiprocess_dir(path)
