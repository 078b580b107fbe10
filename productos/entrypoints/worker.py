"""Serving under gunicorn: the worker class the tuned configuration uses, and how it leaves service.

SIGTERM to gunicorn's master (systemd stopping the service, an instance being replaced) is a **drain**. Each
worker, at once, makes readiness (``/health``) answer 503 ``draining`` and every response close its connection
(``Connection: close``), and keeps accepting and serving for ``PRODUCTOS_DRAIN_SECONDS``: long enough for the
balancer's health checks to see the instance go and move its connections elsewhere. Then the worker stops
accepting, closes its idle connections, lets in-flight requests finish within ``PRODUCTOS_GRACEFUL_TIMEOUT``
(less :data:`SHUTDOWN_MARGIN`), and runs the app's shutdown. Closing the listener and idle keep-alive
connections at the signal, as uvicorn does, loses the requests the balancer sends before it notices, and the
ones it sends on connections just closed.

gunicorn's master closes its own copies of the listening sockets on SIGTERM; the workers' copies keep the port
open, so the drain lives in the workers. The master's graceful timeout must cover the drain and the in-flight
requests: the tuned configuration sets it to their sum.

SIGTERM from the master for any other reason (``kill -HUP``: a graceful reload; fewer workers; a worker
recycled) **retires** the worker: the instance stays in service and readiness stays 200. The worker stops
accepting at once (the newer workers accept), answers each request left on its connections with
``Connection: close``, and exits once none is open or the drain period is over. The master tells the two cases
apart through a flag it sets, in memory shared with the workers, just before it stops them
(:func:`watch_instance_shutdown`, installed by the tuned configuration; without it, every SIGTERM drains).
"""

from __future__ import annotations

import functools
import mmap
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]
from uvicorn.config import Config
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from productos.entrypoints.protocol import HttpLimits, ProductosHttpToolsProtocol
from productos.http.drain import Drain, Phase
from productos.http.middleware import applies_trusted_proxies, trusted_hosts
from productos.settings import Settings

__all__ = [
    "SHUTDOWN_MARGIN",
    "DrainingServer",
    "InstanceShutdown",
    "ProductosUvicornWorker",
    "server_applies_proxy_headers",
    "serving_settings",
    "watch_instance_shutdown",
]

#: Seconds kept back from gunicorn's graceful timeout for the app's own shutdown (closing the pool).
SHUTDOWN_MARGIN = 2


@functools.cache
def serving_settings() -> Settings:
    """The settings gunicorn's master serves with: environment and ``.env`` only, read once (the master binds
    and forks before any worker could read SSM or Secrets Manager)."""
    return Settings()


def server_applies_proxy_headers(app: object, forwarded_allow_ips: str | list[str]) -> bool:
    """Whether uvicorn's own proxy-headers handling should wrap ``app`` in this worker.

    Not when the app applies ``PRODUCTOS_TRUSTED_PROXIES`` itself (a ``create_service`` app) and gunicorn's
    ``forwarded_allow_ips`` is that same list, as the tuned configuration sets it: the server would do the same
    work again on every request. Any other list (gunicorn's default, one given on its command line) or any other
    app keeps uvicorn's handling, as under the plain ``UvicornWorker``.
    """
    if not applies_trusted_proxies(app):
        return True
    try:
        return trusted_hosts(forwarded_allow_ips) != trusted_hosts(serving_settings().trusted_proxies)
    except ValueError:  # an entry that is no address or network (a host's name): uvicorn's to interpret
        return True


class InstanceShutdown:
    """A flag gunicorn's master sets when SIGTERM stops the whole instance, read by its workers.

    One byte of anonymous shared memory, made in the master before it forks: every worker sees the master's
    write, however late it was forked.
    """

    def __init__(self) -> None:
        self._byte = mmap.mmap(-1, 1)

    def set(self) -> None:
        self._byte[0] = 1

    def is_set(self) -> bool:
        return self._byte[0] == 1


#: Made by :func:`watch_instance_shutdown` in the master; None when gunicorn runs without the tuned configuration.
_instance_shutdown: InstanceShutdown | None = None


def watch_instance_shutdown(arbiter: Any) -> InstanceShutdown:
    """Have gunicorn's master (``arbiter``) set the instance-shutdown flag on SIGTERM, before it stops the
    workers. Call from the ``on_starting`` hook, before any worker is forked."""
    global _instance_shutdown
    flag = InstanceShutdown()
    stop = arbiter.handle_term

    def handle_term() -> None:
        flag.set()
        stop()

    # The arbiter dispatches SIGTERM to getattr(self, "handle_term"): the instance attribute wins.
    arbiter.handle_term = handle_term
    _instance_shutdown = flag
    return flag


def _instance_is_stopping() -> bool:
    return _instance_shutdown is None or _instance_shutdown.is_set()


class DrainingServer(Server):
    """uvicorn's ``Server``, which on SIGTERM drains or retires (see the module's docstring) before it shuts down.

    Args:
        config: uvicorn's configuration.
        drain: the process's drain state; it joins the lifespan state, so ``/health`` reads it.
        drain_seconds: how long to keep serving after SIGTERM (0: shut down at once, as uvicorn does).
        instance_stopping: whether a SIGTERM now means the instance is stopping (else a reload).
    """

    def __init__(
        self,
        config: Config,
        drain: Drain,
        drain_seconds: float,
        instance_stopping: Callable[[], bool] = _instance_is_stopping,
    ) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_seconds = drain_seconds
        self._instance_stopping = instance_stopping
        self._leave_at: float | None = None
        self._retired = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.lifespan.state[Drain.STATE_KEY] = self.drain
        await super().startup(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.started and self._leave_at is None and self.drain_seconds > 0:
            # The same bookkeeping as uvicorn's: the worker ends by re-raising the signals it caught.
            self._captured_signals.append(sig)
            if self._instance_stopping():
                self.drain.drain()
            else:
                self.drain.retire()
            self._leave_at = time.monotonic() + self.drain_seconds
            return
        # A second SIGTERM ends the drain now; SIGINT is uvicorn's (a second one forces the exit).
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._leave_at is not None and not self.should_exit:
            if self.drain.phase is Phase.RETIRING:
                if not self._retired:
                    self._stop_accepting()
                    self._retired = True
                if not self.server_state.connections:
                    self.should_exit = True
            if time.monotonic() >= self._leave_at:
                self.should_exit = True
        return await super().on_tick(counter)

    def _stop_accepting(self) -> None:
        """Close this process's listening sockets, as uvicorn's shutdown does later (closing a server closes
        its socket at once, under uvloop and asyncio alike); the port stays open in the other workers."""
        for server in self.servers:
            server.close()


class ProductosUvicornWorker(UvicornWorker):  # type: ignore[misc]
    """Uvicorn's gunicorn worker, with gunicorn's timeouts carried into uvicorn, the drain on SIGTERM, and HTTP
    limits.

    - ``keepalive`` becomes uvicorn's ``timeout_keep_alive`` (the base class already does this).
    - ``graceful_timeout`` is the drain (``PRODUCTOS_DRAIN_SECONDS``, shortened if it does not fit) plus
      uvicorn's ``timeout_graceful_shutdown`` plus a small margin: in-flight requests get to finish, and the
      lifespan's shutdown (disposing the pool) still runs before the master sends SIGKILL.
    - Requests are parsed by :class:`ProductosHttpToolsProtocol` with ``PRODUCTOS_MAX_HEADER_SIZE``,
      ``PRODUCTOS_MAX_HEADER_COUNT`` and ``PRODUCTOS_HEADER_TIMEOUT``.
    - The client's address and scheme behind trusted proxies are the app's to set when it applies
      ``PRODUCTOS_TRUSTED_PROXIES`` itself (:func:`server_applies_proxy_headers`).
    """

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "auto", "http": "auto", "lifespan": "on"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = serving_settings()
        graceful = int(self.cfg.graceful_timeout)
        self.drain_seconds = min(settings.drain_seconds, max(0, graceful - SHUTDOWN_MARGIN - 1))
        self.config.timeout_graceful_shutdown = max(1, graceful - self.drain_seconds - SHUTDOWN_MARGIN)
        # Our middleware writes the access line; uvicorn's would duplicate it in another format.
        self.config.access_log = False
        self.drain = Drain()
        self.config.http = ProductosHttpToolsProtocol.configured(HttpLimits.from_settings(settings), self.drain)

    async def _serve(self) -> None:
        # UvicornWorker._serve, with the draining server.
        self.config.app = self.wsgi
        self.config.proxy_headers = server_applies_proxy_headers(self.wsgi, self.cfg.forwarded_allow_ips)
        server = DrainingServer(self.config, self.drain, self.drain_seconds)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
