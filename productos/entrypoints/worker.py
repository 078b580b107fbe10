"""Serving under gunicorn: the worker class the tuned configuration uses."""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker

#: Seconds kept back from gunicorn's graceful timeout for the app's own shutdown (closing the pool).
SHUTDOWN_MARGIN = 2


class ProductosUvicornWorker(UvicornWorker):  # type: ignore[misc]
    """Uvicorn's gunicorn worker, with gunicorn's timeouts carried into uvicorn.

    - ``keepalive`` becomes uvicorn's ``timeout_keep_alive`` (the base class already does this).
    - ``graceful_timeout`` becomes uvicorn's ``timeout_graceful_shutdown``, less a small margin: in-flight
      requests get to finish, and the lifespan's shutdown (disposing the pool) still runs before the master
      sends SIGKILL. Without it uvicorn would wait for requests with no bound and be killed mid-shutdown.
    """

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "auto", "http": "auto", "lifespan": "on"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = max(1, self.cfg.graceful_timeout - SHUTDOWN_MARGIN)
        # Our middleware writes the access line; uvicorn's would duplicate it in another format.
        self.config.access_log = False
