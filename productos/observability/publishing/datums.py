"""One step's datums, built from the change of the instance's figures and the step's pool samples.

- ``RequestCount`` and ``RequestLatency`` (ms): the step's delta of ``http_server_request_duration_seconds``
  (health checks and ``/metrics`` scrapes left out, as the ALB's own ``RequestCount`` leaves them out),
  latency as ``Values``/``Counts`` (one value per histogram bucket) so CloudWatch computes percentiles.
- ``DBQueryTime`` (ms): the step's delta of ``db_client_operation_duration_seconds``, the same way.
- ``DBConnectionsInUse`` and ``DBPoolUtilization`` (%): ``db_client_connection_count{state=used}`` and
  ``used / db_client_connection_max`` summed over the live workers (``max`` is each pool's size plus its
  overflow), sampled every second of the step (ten times a step under 10 s) and sent as the distribution
  of the samples.
- ``MetricsDropped``: datapoints dropped because CloudWatch stayed unreachable longer than the buffer lasts.

Each goes out once per dimension set (see ``dimensions``). Timestamps are the start of the step (steps align
to the clock: a 60 s step is a CloudWatch minute); steps under 60 s are high resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from productos.domain.metrics_ports import (
    DB_CONNECTIONS_IN_USE,
    DB_POOL_UTILIZATION,
    DB_QUERY_TIME,
    METRICS_DROPPED,
    REQUEST_COUNT,
    REQUEST_LATENCY,
    UNITS,
    MetricDatum,
)
from productos.observability.publishing.dimensions import DimensionSet
from productos.observability.publishing.figures import Cumulative, Figures, PoolSample


def distribution(delta: Cumulative, *, scale: float = 1.0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A histogram's step as ``Values``/``Counts``: one value per non-empty bucket, its midpoint (times
    ``scale``). The overflow bucket's value is what the step's sum leaves for it, at least its lower bound."""
    values: list[float] = []
    counts: list[float] = []
    lower = 0.0
    previous = 0.0
    accounted = 0.0
    for le, cumulative in delta.buckets:
        n = cumulative - previous
        previous = cumulative
        if n > 0:
            if math.isinf(le):
                rest = (delta.sum - accounted) / n
                value = max(lower, rest)
            else:
                value = (lower + le) / 2
                accounted += value * n
            values.append(round(value * scale, 6))
            counts.append(n)
        if not math.isinf(le):
            lower = le
    return tuple(values), tuple(counts)


def sample_distribution(samples: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Samples as ``Values``/``Counts``: each distinct value (to 4 decimals) and how often it was seen."""
    tally: dict[float, float] = {}
    for sample in samples:
        value = round(sample, 4)
        tally[value] = tally.get(value, 0.0) + 1
    ordered = sorted(tally.items())
    return tuple(v for v, _ in ordered), tuple(c for _, c in ordered)


def step_datums(
    *,
    start: float,
    interval: float,
    delta: Figures,
    pool: Sequence[PoolSample],
    dropped: int,
    dimension_sets: Sequence[DimensionSet],
) -> list[MetricDatum]:
    """The datums of one step (every metric, once per dimension set), timestamped at the step's start."""
    timestamp = datetime.fromtimestamp(start, UTC)
    resolution = 1 if interval < 60 else 60
    figures: list[tuple[str, dict[str, Any]]] = [
        (REQUEST_COUNT, {"value": delta.requests.count}),
        (METRICS_DROPPED, {"value": float(dropped)}),
    ]
    latency = distribution(delta.requests, scale=1000.0)
    if latency[0]:
        figures.append((REQUEST_LATENCY, {"values": latency[0], "counts": latency[1]}))
    queries = distribution(delta.queries, scale=1000.0)
    if queries[0]:
        figures.append((DB_QUERY_TIME, {"values": queries[0], "counts": queries[1]}))
    if pool:
        in_use = sample_distribution([s.in_use for s in pool])
        figures.append((DB_CONNECTIONS_IN_USE, {"values": in_use[0], "counts": in_use[1]}))
        utilization = [u for u in (s.utilization for s in pool) if u is not None]
        if utilization:
            percent = sample_distribution(utilization)
            figures.append((DB_POOL_UTILIZATION, {"values": percent[0], "counts": percent[1]}))
    return [
        MetricDatum(
            name=name,
            unit=UNITS[name],
            timestamp=timestamp,
            dimensions=dimensions,
            storage_resolution=resolution,
            **payload,
        )
        for dimensions in dimension_sets
        for name, payload in figures
    ]
