"""The instance's figures at one moment, and their change over a step.

``Cumulative`` and ``Figures`` hold the request and query histograms summed over every worker, cumulative
since gunicorn started; a step's datums come from the difference of two readings (``minus``), and a counter
that went back (a reset) counts whole. They serialize to JSON so that the holder of the lease can write
where it stopped and a successor counts nothing twice. ``PoolSample`` is one reading of the pools' gauges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Cumulative:
    """A histogram summed over its label sets: cumulative count per upper bound (``le``), sum and count."""

    buckets: tuple[tuple[float, float], ...] = ()
    sum: float = 0.0
    count: float = 0.0

    def minus(self, earlier: Cumulative) -> Cumulative:
        """The change since ``earlier``; everything, if the counters went back (a reset)."""
        before = dict(earlier.buckets)
        deltas = tuple((le, n - before.get(le, 0.0)) for le, n in self.buckets)
        if self.count < earlier.count or any(d < 0 for _, d in deltas):
            return self
        return Cumulative(deltas, self.sum - earlier.sum, self.count - earlier.count)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; ``+Inf`` is written as text."""
        return {
            "buckets": [[_le_text(le), n] for le, n in self.buckets],
            "sum": self.sum,
            "count": self.count,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cumulative:
        """The inverse of ``to_json``; missing keys read as empty."""
        buckets = tuple((float(le), float(n)) for le, n in data.get("buckets", []))
        return cls(buckets, float(data.get("sum", 0.0)), float(data.get("count", 0.0)))


@dataclass(frozen=True)
class Figures:
    """The instance's counters at one moment: request and query durations, cumulative since start."""

    requests: Cumulative = field(default_factory=Cumulative)
    queries: Cumulative = field(default_factory=Cumulative)

    def minus(self, earlier: Figures) -> Figures:
        """The change since ``earlier``, histogram by histogram (see ``Cumulative.minus``)."""
        return Figures(self.requests.minus(earlier.requests), self.queries.minus(earlier.queries))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, for the hand-over to a successor."""
        return {"requests": self.requests.to_json(), "queries": self.queries.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figures:
        """The inverse of ``to_json``; missing keys read as empty."""
        return cls(Cumulative.from_json(data.get("requests", {})), Cumulative.from_json(data.get("queries", {})))


@dataclass(frozen=True)
class PoolSample:
    """Connections in use and the pools' capacity (size + overflow), summed over the live workers."""

    in_use: float = 0.0
    capacity: float = 0.0

    @property
    def utilization(self) -> float | None:
        """Percent of capacity in use; ``None`` when no pool reports a capacity."""
        return 100.0 * self.in_use / self.capacity if self.capacity > 0 else None


def _le_text(le: float) -> str:
    return "+Inf" if math.isinf(le) else repr(le)
