"""The metrics-publisher port: what the instance's publishing loop hands to CloudWatch, EMF or a fake.

The CloudWatch names are contracts (DESIGN.md): the ASG's target-tracking policy reads ``DBPoolUtilization``
with the ``AutoScalingGroupName`` dimension and the ``Average`` statistic, exactly as published here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from productos.domain.errors import ProductosError

DEFAULT_NAMESPACE = "Productos"

DB_POOL_UTILIZATION = "DBPoolUtilization"
DB_CONNECTIONS_IN_USE = "DBConnectionsInUse"
DB_QUERY_TIME = "DBQueryTime"
REQUEST_LATENCY = "RequestLatency"
REQUEST_COUNT = "RequestCount"
#: Datapoints the publisher had to drop (CloudWatch unreachable longer than its buffer lasts).
METRICS_DROPPED = "MetricsDropped"

ASG_DIMENSION = "AutoScalingGroupName"
INSTANCE_DIMENSION = "InstanceId"

#: Each metric and its CloudWatch unit.
UNITS: dict[str, str] = {
    DB_POOL_UTILIZATION: "Percent",
    DB_CONNECTIONS_IN_USE: "Count",
    DB_QUERY_TIME: "Milliseconds",
    REQUEST_LATENCY: "Milliseconds",
    REQUEST_COUNT: "Count",
    METRICS_DROPPED: "Count",
}

#: The statistic the scaling policy applies to ``DBPoolUtilization``: the mean over the ASG's instances.
POOL_STATISTIC = "Average"


@dataclass(frozen=True)
class StatisticSet:
    """Pre-aggregated values (CloudWatch ``StatisticValues``): no percentiles can be computed from it."""

    sample_count: float
    sum: float
    minimum: float
    maximum: float


@dataclass(frozen=True)
class MetricDatum:
    """One datapoint of one metric, for one set of dimensions.

    Exactly one of ``value``, ``statistics`` or ``values`` (with ``counts``) is given. ``values``/``counts``
    carry a distribution (each value and how often it occurred), from which CloudWatch computes percentiles.

    Attributes:
        name: the metric's name (``RequestLatency``).
        unit: its CloudWatch unit (``Milliseconds``, ``Percent``, ``Count``).
        timestamp: the start of the step the datapoint describes (timezone-aware).
        dimensions: ``(name, value)`` pairs, in order.
        storage_resolution: 1 for high resolution (steps under a minute), else 60.
    """

    name: str
    unit: str
    timestamp: datetime
    dimensions: tuple[tuple[str, str], ...] = ()
    value: float | None = None
    statistics: StatisticSet | None = None
    values: tuple[float, ...] = ()
    counts: tuple[float, ...] = ()
    storage_resolution: int = 60
    #: Free-form labels for fakes and logs; never sent.
    tags: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        given = (self.value is not None) + (self.statistics is not None) + bool(self.values)
        if given != 1:
            raise ValueError(f"{self.name}: give exactly one of value, statistics or values")
        if self.counts and len(self.counts) != len(self.values):
            raise ValueError(f"{self.name}: values and counts differ in length")
        if self.timestamp.tzinfo is None:
            raise ValueError(f"{self.name}: the timestamp must be timezone-aware")

    @property
    def sample_count(self) -> float:
        """How many observations the datum stands for."""
        if self.statistics is not None:
            return self.statistics.sample_count
        if self.values:
            return float(sum(self.counts)) if self.counts else float(len(self.values))
        return 1.0


class PublishError(ProductosError):
    """Publishing failed after the adapter's own retries.

    Attributes:
        sent: how many of the datums, from the first, were accepted before the failure (the caller keeps the
            rest for a later attempt).
    """

    def __init__(self, message: str, *, sent: int = 0) -> None:
        super().__init__(message)
        self.sent = sent


@runtime_checkable
class MetricsPublisher(Protocol):
    """Sends datapoints somewhere CloudWatch reads them (the API, logs in EMF) or records them (tests)."""

    @property
    def namespace(self) -> str: ...

    async def publish(self, data: Sequence[MetricDatum]) -> None:
        """Send ``data`` (any number: the adapter batches to its limits).

        Raises:
            PublishError: not everything was accepted; ``sent`` says how much was.
        """
        ...
