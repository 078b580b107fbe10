"""A serving process's way out of service: what the server tells the app, and the protocol, when it stops.

``productos.entrypoints.worker.ProductosUvicornWorker`` makes one :class:`Drain` per worker process and puts it
in the lifespan state (``request.state`` of every request) under :data:`Drain.STATE_KEY`; ``/health`` reads it,
and the worker's HTTP protocol reads it for each response. Without that worker (``uvicorn`` alone, plain
``UvicornWorker``) there is none, and the app serves as if it were ``SERVING``.
"""

from __future__ import annotations

import enum
import time

__all__ = ["Drain", "Phase"]


class Phase(enum.Enum):
    """Where a serving process is on its way out."""

    #: In service.
    SERVING = "serving"
    #: Replaced by newer workers of the same instance (gunicorn's graceful reload, ``kill -HUP``): the instance
    #: stays in service, so readiness stays 200; this process accepts no new connection and answers each
    #: request left on its connections with ``Connection: close``.
    RETIRING = "retiring"
    #: The instance is leaving (SIGTERM to gunicorn's master): readiness is 503 ``draining`` so the balancer
    #: stops sending, and every response says ``Connection: close`` so it moves its connections, while this
    #: process keeps accepting and serving for the drain period.
    DRAINING = "draining"


class Drain:
    """The process's :class:`Phase`; it only moves forward (``SERVING`` → ``RETIRING`` → ``DRAINING``)."""

    #: Key of the instance in the lifespan state (``request.state.productos_drain``).
    STATE_KEY = "productos_drain"

    def __init__(self) -> None:
        self._phase = Phase.SERVING
        self._since: float | None = None

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def ready(self) -> bool:
        """Whether readiness (``/health``) may answer 200: not while the instance drains."""
        return self._phase is not Phase.DRAINING

    @property
    def closing(self) -> bool:
        """Whether each response closes its connection (``Connection: close``)."""
        return self._phase is not Phase.SERVING

    @property
    def since(self) -> float | None:
        """``time.monotonic()`` when the process left ``SERVING``, else None."""
        return self._since

    def retire(self) -> None:
        """Enter ``RETIRING`` (no effect once retiring or draining)."""
        self._enter(Phase.RETIRING)

    def drain(self) -> None:
        """Enter ``DRAINING`` (also from ``RETIRING``)."""
        self._enter(Phase.DRAINING)

    def _enter(self, phase: Phase) -> None:
        order = list(Phase)
        if order.index(phase) > order.index(self._phase):
            self._phase = phase
            if self._since is None:
                self._since = time.monotonic()
