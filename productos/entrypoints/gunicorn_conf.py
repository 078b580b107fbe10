"""gunicorn configuration tuned for EC2 instances behind an Application Load Balancer.

Use: ``gunicorn -c python:productos.gunicorn_conf productos.main:app`` (what ``productos serve`` runs).
Serving settings come from the environment and ``.env`` (``APP_HOST``, ``APP_PORT``, ``WORKERS``,
``LOG_LEVEL``, ``PRODUCTOS_KEEPALIVE``, ``PRODUCTOS_GRACEFUL_TIMEOUT``, ``PRODUCTOS_DRAIN_SECONDS``, the header
limits); the app loads the rest in each worker.
"""

from __future__ import annotations

import atexit
import gc
import logging.config
import os
from typing import Any

from productos.entrypoints.worker import serving_settings, watch_instance_shutdown
from productos.observability.logging import logging_config
from productos.settings import parse_proxies

__all__ = [
    "accesslog",
    "bind",
    "capture_output",
    "child_exit",
    "control_socket_disable",
    "errorlog",
    "forwarded_allow_ips",
    "graceful_timeout",
    "keepalive",
    "logconfig_dict",
    "loglevel",
    "on_exit",
    "on_starting",
    "post_fork",
    "post_worker_init",
    "preload_app",
    "timeout",
    "worker_class",
    "workers",
]

_settings = serving_settings()

bind = [f"{_settings.app_host}:{_settings.app_port}"]
workers = _settings.workers
worker_class = "productos.entrypoints.worker.ProductosUvicornWorker"

# The ALB keeps idle connections open for 60 s. The app must keep them longer, or it may close one just as
# the ALB sends a request on it, and the client gets a 502.
keepalive = _settings.keepalive

# SIGTERM: each worker drains (readiness 503, Connection: close, still serving) for PRODUCTOS_DRAIN_SECONDS,
# then stops accepting and lets in-flight requests finish within PRODUCTOS_GRACEFUL_TIMEOUT; the master kills
# what is left after both (productos.entrypoints.worker). systemd's TimeoutStopSec, the target group's health
# check and deregistration delay are set to match in deploy/.
graceful_timeout = _settings.drain_seconds + _settings.graceful_timeout
# Heartbeat: a worker whose event loop is blocked this long is killed and replaced.
timeout = 60

# Structured JSON lines on stdout for CloudWatch Logs; productos writes the access line itself.
loglevel = _settings.log_level
logconfig_dict = logging_config(_settings.log_level, _settings.log_format)
accesslog = None
errorlog = "-"
capture_output = False

# Nothing at boot may need the database: each worker opens its engine lazily in the lifespan.
preload_app = False

# gunicorn >= 27 opens a management socket at a fixed per-user path; productos does not use it, and two
# services on one host (or a test run beside a live service) would fight over it.
control_socket_disable = True

# The client's address and scheme (client.address, url.scheme in the access line, spans and metrics): uvicorn's
# proxy-headers handling takes them from X-Forwarded-For and X-Forwarded-Proto only when the peer is one of
# these proxies (PRODUCTOS_TRUSTED_PROXIES: addresses, CIDR networks or "*"; none by default). create_service
# applies the same list in the app (productos.http.middleware.EdgeMiddleware), so that it holds under any server;
# productos' worker then leaves uvicorn's copy off when this list is the app's (server_applies_proxy_headers).
forwarded_allow_ips = "*" if "*" in parse_proxies(_settings.trusted_proxies) else _settings.trusted_proxies


# Prometheus multiprocess mode: every worker writes its metrics to files in one directory, and /metrics on
# any worker merges them. The master makes the directory fresh before it forks any worker, tells each dead
# worker's gauges to go, and removes the directory when it exits, by any way: on_exit runs only when the
# master halts, not when it cannot bind its port or fails otherwise, so an exit handler removes it too.
_metrics_dir: str | None = None


def on_starting(server: Any) -> None:
    global _metrics_dir
    from productos.observability.metrics import create_multiprocess_dir, remove_multiprocess_dir

    # Before any worker is forked: SIGTERM to the master drains the workers, any other stop retires them.
    watch_instance_shutdown(server)
    _metrics_dir = path = create_multiprocess_dir()
    master = os.getpid()

    def remove_in_master() -> None:
        # Forked workers inherit exit handlers; only the master owns the directory.
        if os.getpid() == master:
            remove_multiprocess_dir(path)

    atexit.register(remove_in_master)
    server.log.info("Prometheus multiprocess directory %s", _metrics_dir)


def post_fork(server: Any, worker: Any) -> None:
    # uvicorn's worker class gives uvicorn's loggers gunicorn's handlers and stops them propagating. With
    # logconfig_dict gunicorn's loggers have no handlers of their own (they propagate to the root's JSON one),
    # so uvicorn's first lines, and a failed startup's traceback, would reach Python's last-resort handler as
    # plain text. Route them to the JSON handler again, in the worker.
    logging.config.dictConfig(logconfig_dict)


def post_worker_init(worker: Any) -> None:
    # The worker has imported the app: FastAPI, SQLAlchemy, pydantic, OpenTelemetry... over a hundred thousand
    # of objects that live as long as the process. Python's full (generation 2) collections scan every one of
    # them: under load about every half second, for 41-75 ms each, with the event loop stopped (measured with
    # the benchmarks' productos at 64 clients). Frozen, they are skipped, and a full collection takes < 1 ms.
    # Collected first, so that no startup garbage is frozen with them.
    if _settings.gc_freeze:
        gc.collect()
        gc.freeze()
        worker.log.info("froze %d objects of the app's startup out of the garbage collector", gc.get_freeze_count())


def child_exit(server: Any, worker: Any) -> None:
    from productos.observability.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    from productos.observability.metrics import remove_multiprocess_dir

    if _metrics_dir is not None:
        remove_multiprocess_dir(_metrics_dir)
