"""gunicorn configuration of (f): prometheus-client's multiprocess mode, as its documentation sets it up.

``PROMETHEUS_MULTIPROC_DIR`` comes from the environment (the harness makes a fresh, empty directory for each
start and deletes it after); this hook forgets a dead worker's live gauges. Everything else is on the command
line, as for (b)-(e): ``gunicorn -c python:bench.contenders.fastapi_instrumented_gunicorn -w 2 -k ...``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import multiprocess


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
