"""Where the publisher reads the instance's figures: prometheus-client's metric families.

Under gunicorn the publisher reads the figures of every worker from the Prometheus multiprocess files
(``MultiprocessSource``), so the calls per instance per step stay one whatever the workers and the request
rate; a single process reads its own registry (``RegistrySource``). Health checks and ``/metrics`` scrapes
are left out of the request figures, as the ALB's own ``RequestCount`` leaves them out.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from productos.observability.publishing.figures import Cumulative, Figures, PoolSample

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

HTTP_DURATION = "http_server_request_duration_seconds"
DB_DURATION = "db_client_operation_duration_seconds"
CONNECTION_COUNT = "db_client_connection_count"
CONNECTION_MAX = "db_client_connection_max"
#: Routes whose requests are not traffic: the ALB's health checks and Prometheus scrapes (and their subpaths).
EXCLUDED_ROUTES = ("/health", "/metrics")


class FiguresSource(Protocol):
    """Where the loop reads the instance's figures; both methods block briefly (run in a thread)."""

    def figures(self) -> Figures: ...

    def pool(self) -> PoolSample: ...


def _excluded(route: str, excluded: Sequence[str]) -> bool:
    return any(route == prefix or route.startswith(prefix.rstrip("/") + "/") for prefix in excluded)


def figures_from(families: Iterable[Any], excluded_routes: Sequence[str] = EXCLUDED_ROUTES) -> Figures:
    """``Figures`` from prometheus-client metric families (a registry's ``collect()`` or a multiprocess
    merge with ``accumulate=True``: the same shapes)."""
    found: dict[str, Cumulative] = {}
    for family in families:
        if family.name not in (HTTP_DURATION, DB_DURATION):
            continue
        buckets: dict[float, float] = {}
        total = count = 0.0
        for sample in family.samples:
            if family.name == HTTP_DURATION and _excluded(sample.labels.get("http_route", ""), excluded_routes):
                continue
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
        found[family.name] = Cumulative(tuple(sorted(buckets.items())), total, count)
    return Figures(found.get(HTTP_DURATION, Cumulative()), found.get(DB_DURATION, Cumulative()))


def pool_from(families: Iterable[Any]) -> PoolSample:
    """A ``PoolSample`` from prometheus-client metric families: connections ``used`` and the pools' ``max``."""
    in_use = capacity = 0.0
    for family in families:
        if family.name == CONNECTION_COUNT:
            in_use += sum(s.value for s in family.samples if s.labels.get("db_client_connection_state") == "used")
        elif family.name == CONNECTION_MAX:
            capacity += sum(s.value for s in family.samples)
    return PoolSample(max(in_use, 0.0), max(capacity, 0.0))


class MultiprocessSource:
    """Figures of every worker of the instance, from the Prometheus multiprocess directory."""

    def __init__(self, path: str | Path, *, excluded_routes: Sequence[str] = EXCLUDED_ROUTES) -> None:
        self.path = str(path)
        self.excluded_routes = tuple(excluded_routes)

    def _merge(self, pattern: str) -> Iterable[Any]:
        from prometheus_client.multiprocess import MultiProcessCollector

        files = glob.glob(os.path.join(self.path, pattern))
        return MultiProcessCollector.merge(files, accumulate=True) if files else ()  # type: ignore[no-untyped-call]

    def figures(self) -> Figures:
        """The request and query histograms, summed over every worker's files."""
        return figures_from(self._merge("histogram_*.db"), self.excluded_routes)

    def pool(self) -> PoolSample:
        """The pools' gauges, summed over the live workers."""
        # ``livesum`` gauges: a dead worker's file is removed (gunicorn_conf's child_exit), so are its counts.
        return pool_from(self._merge("gauge_livesum_*.db"))


class RegistrySource:
    """Figures of one process, from its registry (a single process: ``uvicorn``, tests)."""

    def __init__(self, registry: CollectorRegistry, *, excluded_routes: Sequence[str] = EXCLUDED_ROUTES) -> None:
        self.registry = registry
        self.excluded_routes = tuple(excluded_routes)

    def figures(self) -> Figures:
        """The request and query histograms of this process."""
        return figures_from(self.registry.collect(), self.excluded_routes)

    def pool(self) -> PoolSample:
        """The pool's gauges of this process."""
        return pool_from(self.registry.collect())
