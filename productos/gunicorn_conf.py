"""gunicorn configuration tuned for EC2 instances behind an Application Load Balancer.

Use: ``gunicorn -c python:productos.gunicorn_conf productos.main:app`` (what ``productos serve`` runs).
Serving settings come from the environment and ``.env`` (``APP_HOST``, ``APP_PORT``, ``WORKERS``,
``LOG_LEVEL``, ``PRODUCTOS_KEEPALIVE``, ``PRODUCTOS_GRACEFUL_TIMEOUT``); the app loads the rest in each
worker.
"""

from __future__ import annotations

from productos.observability.logging import logging_config
from productos.settings import Settings

_settings = Settings()

bind = [f"{_settings.app_host}:{_settings.app_port}"]
workers = _settings.workers
worker_class = "productos.serving.ProductosUvicornWorker"

# The ALB keeps idle connections open for 60 s. The app must keep them longer, or it may close one just as
# the ALB sends a request on it, and the client gets a 502.
keepalive = _settings.keepalive

# SIGTERM: stop accepting, let in-flight requests finish for up to graceful_timeout, then exit. The target
# group's deregistration delay and systemd's TimeoutStopSec are set to match.
graceful_timeout = _settings.graceful_timeout
# Heartbeat: a worker whose event loop is blocked this long is killed and replaced.
timeout = 60

# Structured JSON lines on stdout for CloudWatch Logs; productos writes the access line itself.
loglevel = _settings.log_level
logconfig_dict = logging_config(_settings.log_level)
accesslog = None
errorlog = "-"
capture_output = False

# Nothing at boot may need the database: each worker opens its engine lazily in the lifespan.
preload_app = False

# gunicorn >= 27 opens a management socket at a fixed per-user path; productos does not use it, and two
# services on one host (or a test run beside a live service) would fight over it.
control_socket_disable = True
