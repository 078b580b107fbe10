"""``EmfPublisher``: CloudWatch Embedded Metric Format, one JSON document per line on stdout.

For sites that ship logs rather than call the API: the CloudWatch agent (or Lambda, ECS/Fluent Bit) reads the
lines and CloudWatch Logs extracts the metrics; the instance needs no ``cloudwatch:PutMetricData`` permission.

One document per step and dimension layout: datums of one timestamp that carry the same values under several
dimension sets (the ASG copy and the per-instance copy) become one document listing both sets, so each
figure is written once. EMF has no counts: a distribution is written as its values repeated by their counts
when that is at most 100 values (the format's limit per metric), else as 100 values at evenly spaced ranks
(the percentiles stay right; ``SampleCount`` is then 100 and the exact count is in ``RequestCount``).
A ``StatisticSet`` is written as its mean. Each line is one ``write``, flushed at once, from a thread.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

from productos.domain.metrics_ports import MetricDatum

#: The format's limits: values per metric, metrics per document, dimensions per set.
MAX_VALUES = 100
MAX_METRICS = 100


def emf_values(datum: MetricDatum) -> float | list[float]:
    """The datum's figure as EMF takes it: a number, or an array of at most 100 numbers."""
    if datum.value is not None:
        return datum.value
    if datum.statistics is not None:
        stats = datum.statistics
        return stats.sum / stats.sample_count if stats.sample_count else 0.0
    counts = [int(c) for c in datum.counts] if datum.counts else [1] * len(datum.values)
    total = sum(counts)
    if total <= MAX_VALUES:
        return [v for v, c in zip(datum.values, counts, strict=True) for _ in range(c)]
    ordered = sorted(zip(datum.values, counts, strict=True))
    picked: list[float] = []
    cumulative, index = 0, 0
    for k in range(MAX_VALUES):
        rank = (k + 0.5) * total / MAX_VALUES
        while cumulative + ordered[index][1] < rank:
            cumulative += ordered[index][1]
            index += 1
        picked.append(ordered[index][0])
    return picked


class EmfPublisher:
    """Writes datums as EMF documents to ``stream`` (stdout by default).

    Args:
        namespace: the CloudWatch namespace of the extracted metrics.
        stream: where lines go; the CloudWatch agent reads the service's stdout (journald or a file).
    """

    def __init__(self, namespace: str, stream: TextIO | None = None) -> None:
        self._namespace = namespace
        self._stream = stream
        self.lines = 0

    @property
    def namespace(self) -> str:
        return self._namespace

    async def publish(self, data: Sequence[MetricDatum]) -> None:
        lines = [json.dumps(d, separators=(",", ":"), allow_nan=False) + "\n" for d in self.documents(data)]
        # A full pipe (a slow log shipper) must block a thread, not the event loop that serves requests.
        await asyncio.to_thread(self._write, lines)
        self.lines += len(lines)

    def _write(self, lines: list[str]) -> None:
        stream = self._stream or sys.stdout
        for line in lines:
            stream.write(line)  # one write per line: lines from other writers never land inside it
            stream.flush()

    def documents(self, data: Sequence[MetricDatum]) -> list[dict[str, Any]]:
        """The EMF documents for ``data``, in order of first appearance."""
        # (timestamp, dimensions) -> metric name -> (unit, resolution, values)
        groups: dict[tuple[datetime, tuple[tuple[str, str], ...]], dict[str, tuple[str, int, Any]]] = defaultdict(dict)
        for datum in data:
            groups[(datum.timestamp, datum.dimensions)][datum.name] = (
                datum.unit,
                datum.storage_resolution,
                emf_values(datum),
            )
        # Dimension sets with the very same figures at the same time share one document.
        merged: dict[tuple[datetime, str], list[tuple[tuple[tuple[str, str], ...], dict[str, Any]]]] = defaultdict(list)
        for (timestamp, dimensions), metrics in groups.items():
            key = (timestamp, json.dumps(metrics, sort_keys=True))
            merged[key].append((dimensions, metrics))
        documents = []
        for (timestamp, _), members in merged.items():
            layouts = _compatible_layouts([dims for dims, _ in members])
            metrics = members[0][1]
            for layout in layouts:
                documents.extend(self._documents(timestamp, layout, metrics))
        return documents

    def _documents(
        self,
        timestamp: datetime,
        layout: list[tuple[tuple[str, str], ...]],
        metrics: dict[str, tuple[str, int, Any]],
    ) -> list[dict[str, Any]]:
        names = list(metrics)
        out = []
        for start in range(0, len(names), MAX_METRICS):
            chunk = names[start : start + MAX_METRICS]
            root: dict[str, Any] = {
                "_aws": {
                    "Timestamp": math.floor(timestamp.timestamp() * 1000),
                    "CloudWatchMetrics": [
                        {
                            "Namespace": self._namespace,
                            "Dimensions": [[name for name, _ in dims] for dims in layout],
                            "Metrics": [_definition(name, metrics[name][0], metrics[name][1]) for name in chunk],
                        }
                    ],
                }
            }
            for dims in layout:
                root.update(dict(dims))
            for name in chunk:
                root[name] = metrics[name][2]
            out.append(root)
        return out


def _definition(name: str, unit: str, resolution: int) -> dict[str, Any]:
    definition: dict[str, Any] = {"Name": name, "Unit": unit}
    if resolution == 1:
        definition["StorageResolution"] = 1
    return definition


def _compatible_layouts(
    dimension_sets: list[tuple[tuple[str, str], ...]],
) -> list[list[tuple[tuple[str, str], ...]]]:
    """Group dimension sets whose shared names have equal values (one document's members must agree)."""
    layouts: list[tuple[dict[str, str], list[tuple[tuple[str, str], ...]]]] = []
    for dims in dimension_sets:
        values = dict(dims)
        for seen, members in layouts:
            if all(seen.get(name, value) == value for name, value in values.items()):
                seen.update(values)
                members.append(dims)
                break
        else:
            layouts.append((dict(values), [dims]))
    return [members for _, members in layouts]
