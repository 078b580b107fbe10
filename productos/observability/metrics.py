"""Metrics of a productos service: Prometheus (``/metrics``) and OpenTelemetry, fed by one measurement.

Every measurement is taken once and recorded to both backends: a Prometheus instrument, always, and the
OpenTelemetry instrument of the same name when an OpenTelemetry exporter is configured. Names and units
follow the OpenTelemetry semantic conventions (``http.server.request.duration`` in seconds is
``http_server_request_duration_seconds`` in Prometheus), and so do their attributes: ``http.request.method``,
``http.route``, ``http.response.status_code``, ``url.scheme``, ``error.type`` (failed requests only),
``db.system.name``, ``db.operation.name``, ``db.namespace``; Prometheus spells them with underscores
(``http_request_method``) and shows an absent one as an empty label.

Under gunicorn, prometheus-client runs in multiprocess mode: each worker writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` (created fresh by ``productos.gunicorn_conf``), and ``/metrics`` on any worker
merges the files of all of them. Gauges use ``livesum``: a gauge is the sum over the live workers only, so a
worker that dies leaves nothing behind once ``mark_process_dead`` has run for it.

Batching (``batch=True``, what each gunicorn worker uses): a request adds to plain counters in the worker
(a dozen additions), and ``flush()`` writes the sums to the shared files once a second (``FLUSH_INTERVAL``),
on every ``/metrics`` the worker answers, and on shutdown. Writing each observation to the files instead
costs about 10% of a fast request's CPU. ``/metrics`` is then at most a second behind for the other workers
(gauges and counts alike); a worker killed with SIGKILL loses at most its last second of counts.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from bisect import bisect_left
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter

#: The environment variable prometheus-client reads to switch to multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_SHM = "/dev/shm"  # noqa: S108 - mkdtemp makes a private (0700), unique directory in it
#: Multiprocess directories are named ``productos-metrics-<master's pid>-<random>``.
_PREFIX = "productos-metrics-"

#: The semantic conventions' advice for ``http.server.request.duration``, in seconds.
HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: Database timings (queries, waits for a connection), in seconds: finer at the low end, where a primary-key
#: lookup sits.
DB_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: HTTP methods recorded as they are; any other is ``_OTHER``, so a client cannot create label values.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})

IDLE = "idle"
USED = "used"

#: Seconds between two writes of a batching worker's sums to the shared files.
FLUSH_INTERVAL = 1.0
_HTTP_BOUNDS = (*HTTP_DURATION_BUCKETS, float("inf"))
_DB_BOUNDS = (*DB_DURATION_BUCKETS, float("inf"))


def multiprocess_dir() -> str | None:
    """The multiprocess directory in force, or ``None`` in single-process mode."""
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


def create_multiprocess_dir() -> str:
    """Create a fresh, empty multiprocess directory and point ``PROMETHEUS_MULTIPROC_DIR`` at it.

    Called by gunicorn's master before it forks any worker, so every worker inherits the variable. A new
    directory each start: nothing left by an earlier run (or by another service on the host) can be counted.
    """
    # In memory (tmpfs) where there is one: every request writes to these files, and pages of a file on disk
    # are written back and write-protected again and again.
    base = _SHM if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK) else tempfile.gettempdir()
    _remove_orphans(base)
    # Named after the master, so that a later start can tell when it is gone (see _remove_orphans).
    path = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=base)
    os.environ[MULTIPROC_ENV] = path
    return path


def _remove_orphans(base: str) -> None:
    """Remove the directories of masters that are gone: one killed with SIGKILL runs no exit handler."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        pid, dash, _ = name.removeprefix(_PREFIX).partition("-")
        if not name.startswith(_PREFIX) or not dash or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        except OSError:
            continue  # alive, and someone else's


def remove_multiprocess_dir(path: str) -> None:
    """Delete the directory ``create_multiprocess_dir`` made (when gunicorn's master exits)."""
    shutil.rmtree(path, ignore_errors=True)


def mark_process_dead(pid: int) -> None:
    """Forget a dead worker's ``live*`` gauges: its connections and in-flight requests are gone."""
    path = multiprocess_dir()
    if path is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


_pid = os.getpid()


def _remember_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_remember_pid)


def _process_id() -> int:
    return _pid


def _use_multiprocess_values_if_configured() -> None:
    # prometheus-client picks its value class when it is first imported. If something imported it in
    # gunicorn's master before ``on_starting`` set the directory, the workers inherited the single-process
    # class: pick again, now that the variable is set, before any metric of ours exists. The process id
    # comes from a variable kept current across forks, not from a getpid() call on every write.
    if multiprocess_dir() is not None and not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue(_process_id)  # type: ignore[no-untyped-call]


class PoolInstruments:
    """The instruments of one connection pool (``db.client.connection.*``), bound to its pool name."""

    def __init__(self, metrics: Metrics, pool_name: str) -> None:
        self._metrics = metrics
        self._otel = metrics._otel
        labels = (pool_name,)
        self._count = {state: metrics._connection_count.labels(pool_name, state) for state in (IDLE, USED)}
        self._max = metrics._connection_max.labels(*labels)
        self._pending = metrics._connection_pending.labels(*labels)
        self._wait = metrics._connection_wait.labels(*labels)
        self._timeouts = metrics._connection_timeouts.labels(*labels)
        pool_attrs = {"db.client.connection.pool.name": pool_name}
        self._attrs = pool_attrs
        self._state_attrs = {state: {**pool_attrs, "db.client.connection.state": state} for state in (IDLE, USED)}

    def connections(self, state: str, delta: int) -> None:
        """``delta`` connections entered (1) or left (-1) ``state``."""
        self._metrics._add(self._count[state], delta)
        if self._otel is not None:
            self._otel["db.client.connection.count"].add(delta, self._state_attrs[state])

    def moved(self, old: str | None, new: str | None) -> None:
        """A connection left state ``old`` for ``new`` (``None``: it was not, or is no longer, open); one call
        per checkout and checkin instead of two ``connections`` calls."""
        if self._metrics.batch:
            deltas = self._metrics._deltas
            if old is not None:
                value = self._count[old]
                deltas[value] = deltas.get(value, 0.0) - 1
            if new is not None:
                value = self._count[new]
                deltas[value] = deltas.get(value, 0.0) + 1
        else:
            if old is not None:
                self._count[old].inc(-1)
            if new is not None:
                self._count[new].inc(1)
        if self._otel is not None:
            counter = self._otel["db.client.connection.count"]
            if old is not None:
                counter.add(-1, self._state_attrs[old])
            if new is not None:
                counter.add(1, self._state_attrs[new])

    def capacity(self, maximum: int) -> None:
        self._max.set(maximum)
        if self._otel is not None:
            self._otel["db.client.connection.max"].add(maximum, self._attrs)

    def pending(self, delta: int) -> None:
        self._metrics._add(self._pending, delta)
        if self._otel is not None:
            self._otel["db.client.connection.pending_requests"].add(delta, self._attrs)

    def waited(self, seconds: float) -> None:
        self._metrics._observe(self._wait, _DB_BOUNDS, seconds)
        if self._otel is not None:
            self._otel["db.client.connection.wait_time"].record(seconds, self._attrs)

    def timed_out(self) -> None:
        self._metrics._add(self._timeouts, 1)
        if self._otel is not None:
            self._otel["db.client.connection.timeouts"].add(1, self._attrs)


class Metrics:
    """The service's instruments, created once per process (in each gunicorn worker, after the fork).

    Args:
        meter: an OpenTelemetry meter to record to as well; ``None`` records to Prometheus only.
        batch: add up in the process and write to Prometheus on ``flush()`` (see the module's docstring);
            otherwise every observation is written as it is made.
    """

    def __init__(self, meter: Meter | None = None, *, batch: bool = False) -> None:
        self.batch = batch
        self._deltas: dict[Any, float] = {}
        self._sums: dict[Any, list[float]] = {}
        _use_multiprocess_values_if_configured()
        self.multiprocess_dir = multiprocess_dir()
        # A registry of our own: two apps in one process (tests) never collide in the global one.
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._http_duration = Histogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests.",
            ["http_request_method", "http_route", "http_response_status_code", "url_scheme", "error_type"],
            buckets=HTTP_DURATION_BUCKETS,
            registry=registry,
        )
        self._http_active = Gauge(
            "http_server_active_requests",
            "Number of active HTTP server requests.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._db_duration = Histogram(
            "db_client_operation_duration_seconds",
            "Duration of database client operations.",
            ["db_system_name", "db_operation_name", "db_namespace"],
            buckets=DB_DURATION_BUCKETS,
            registry=registry,
        )
        pool = ["db_client_connection_pool_name"]
        self._connection_count = Gauge(
            "db_client_connection_count",
            "The number of connections that are currently in the state described by the state label.",
            [*pool, "db_client_connection_state"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._connection_max = Gauge(
            "db_client_connection_max",
            "The maximum number of open connections allowed.",
            pool,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._connection_pending = Gauge(
            "db_client_connection_pending_requests",
            "The number of current pending requests for an open connection.",
            pool,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._connection_wait = Histogram(
            "db_client_connection_wait_time_seconds",
            "The time it took to obtain an open connection from the pool.",
            pool,
            buckets=DB_DURATION_BUCKETS,
            registry=registry,
        )
        self._connection_timeouts = Counter(
            "db_client_connection_timeouts",
            "The number of timeouts while trying to obtain a connection from the pool.",
            pool,
            registry=registry,
        )
        self._otel = _otel_instruments(meter) if meter is not None else None
        # Labelled children and attribute sets, looked up once per label set rather than once per request.
        self._http_children: dict[tuple[str, str, int, str, str | None], tuple[Any, Mapping[str, Any]]] = {}
        self._db_children: dict[tuple[str, str, str | None], tuple[Any, Mapping[str, Any]]] = {}

    # HTTP --------------------------------------------------------------------------------------------------

    def request_started(self) -> None:
        self._add(self._http_active, 1)
        if self._otel is not None:
            self._otel["http.server.active_requests"].add(1)

    def request_finished(
        self,
        method: str,
        route: str,
        status: int,
        seconds: float,
        scheme: str = "http",
        error_type: str | None = None,
    ) -> None:
        """Record one request.

        Args:
            method: ``http.request.method``, already normalised (see ``KNOWN_METHODS``).
            route: ``http.route``, the route template.
            status: ``http.response.status_code``.
            seconds: the request's duration.
            scheme: ``url.scheme`` (``http`` or ``https``, as the client or the trusted proxy saw it).
            error_type: ``error.type``, only for a failed request: the exception's class name, or the status
                code of a 5xx (OpenTelemetry's rule); Prometheus shows none as an empty label.
        """
        key = (method, route, status, scheme, error_type)
        entry = self._http_children.get(key)
        if entry is None:
            child = self._http_duration.labels(method, route, str(status), scheme, error_type or "")
            attrs: dict[str, Any] = {
                "http.request.method": method,
                "http.route": route,
                "http.response.status_code": status,
                "url.scheme": scheme,
            }
            if error_type is not None:
                attrs["error.type"] = error_type
            entry = self._http_children[key] = (child, attrs)
        self._observe(entry[0], _HTTP_BOUNDS, seconds)
        self._add(self._http_active, -1)
        if self._otel is not None:
            self._otel["http.server.request.duration"].record(seconds, entry[1])
            self._otel["http.server.active_requests"].add(-1)

    # Database ----------------------------------------------------------------------------------------------

    def operation(self, system: str, operation: str, seconds: float, namespace: str | None = None) -> None:
        """Record one database operation (a statement executed on a cursor).

        Args:
            system: ``db.system.name`` (``postgresql``, ``sqlite``).
            operation: ``db.operation.name`` (``SELECT``...).
            seconds: the statement's duration.
            namespace: ``db.namespace``, the database's name; Prometheus shows none as an empty label.
        """
        key = (system, operation, namespace)
        entry = self._db_children.get(key)
        if entry is None:
            child = self._db_duration.labels(system, operation, namespace or "")
            attrs: dict[str, Any] = {"db.system.name": system, "db.operation.name": operation}
            if namespace:
                attrs["db.namespace"] = namespace
            entry = self._db_children[key] = (child, attrs)
        self._observe(entry[0], _DB_BOUNDS, seconds)
        if self._otel is not None:
            self._otel["db.client.operation.duration"].record(seconds, entry[1])

    def pool(self, pool_name: str) -> PoolInstruments:
        return PoolInstruments(self, pool_name)

    # Batching ----------------------------------------------------------------------------------------------

    def _add(self, value: Any, delta: float) -> None:
        if self.batch:
            self._deltas[value] = self._deltas.get(value, 0.0) + delta
        else:
            value.inc(delta)

    def _observe(self, histogram: Any, bounds: tuple[float, ...], amount: float) -> None:
        if not self.batch:
            histogram.observe(amount)
            return
        sums = self._sums.get(histogram)
        if sums is None:
            sums = self._sums[histogram] = [0.0] * (len(bounds) + 1)
        sums[0] += amount
        sums[1 + bisect_left(bounds, amount)] += 1  # the first bucket whose bound is >= amount, as observe()

    def flush(self) -> None:
        """Write what was added up since the last flush (batching only). Call it on the event loop."""
        deltas, self._deltas = self._deltas, {}
        for value, delta in deltas.items():
            if delta:
                value.inc(delta)
        for histogram, sums in self._sums.items():
            if any(sums[1:]):
                # A histogram's sum and buckets, as observe() would have written them, one write each.
                histogram._sum.inc(sums[0])
                for index, count in enumerate(sums[1:]):
                    if count:
                        histogram._buckets[index].inc(count)
                sums[:] = [0.0] * len(sums)

    async def flush_periodically(self, interval: float = FLUSH_INTERVAL) -> None:
        """Flush every ``interval`` seconds until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(interval)
                self.flush()
        finally:
            self.flush()

    # Exposition --------------------------------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The Prometheus exposition (OpenMetrics if ``accept`` asks); all workers' in multiprocess mode."""
        if self.multiprocess_dir is not None:
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry, self.multiprocess_dir)  # type: ignore[no-untyped-call]
        else:
            registry = self.registry
        encoder, content_type = choose_encoder(accept or "")
        return encoder(registry), content_type


def _otel_instruments(meter: Meter) -> dict[str, Any]:
    return {
        "http.server.request.duration": meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=list(HTTP_DURATION_BUCKETS),
        ),
        "http.server.active_requests": meter.create_up_down_counter(
            "http.server.active_requests",
            unit="{request}",
            description="Number of active HTTP server requests.",
        ),
        "db.client.operation.duration": meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of database client operations.",
            explicit_bucket_boundaries_advisory=list(DB_DURATION_BUCKETS),
        ),
        "db.client.connection.count": meter.create_up_down_counter(
            "db.client.connection.count", unit="{connection}", description="Connections by state."
        ),
        "db.client.connection.max": meter.create_up_down_counter(
            "db.client.connection.max",
            unit="{connection}",
            description="The maximum number of open connections.",
        ),
        "db.client.connection.pending_requests": meter.create_up_down_counter(
            "db.client.connection.pending_requests",
            unit="{request}",
            description="The number of current pending requests for an open connection.",
        ),
        "db.client.connection.wait_time": meter.create_histogram(
            "db.client.connection.wait_time",
            unit="s",
            description="The time it took to obtain an open connection from the pool.",
            explicit_bucket_boundaries_advisory=list(DB_DURATION_BUCKETS),
        ),
        "db.client.connection.timeouts": meter.create_counter(
            "db.client.connection.timeouts",
            unit="{timeout}",
            description="Connection timeouts while trying to obtain a connection from the pool.",
        ),
    }
