"""``CloudWatchPublisher``: ``PutMetricData`` through aioboto3, batched to the API's limits.

- Batches: at most 1000 datums and 1 MB of request body per call (the API's limits), measured with
  botocore's own serializer, so a batch never fails for its size.
- Compression: ``PutMetricData`` carries botocore's ``requestcompression`` trait, so botocore gzips a body of
  10 KiB or more (``request_min_compression_size_bytes``); a step's dozen datums (~4 KiB) go plain, where gzip
  would save nothing worth its CPU, and a backlog flushed after an outage goes compressed.
- Retries: the client's own (botocore ``standard`` mode: throttling, 5xx and connection errors, exponential
  backoff with jitter, ``PRODUCTOS_AWS_MAX_ATTEMPTS`` attempts). What still fails raises ``PublishError``
  with the count of datums already accepted, and the caller keeps the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from productos.domain.metrics_ports import MetricDatum, PublishError

logger = logging.getLogger(__name__)

#: The API's limits per ``PutMetricData`` call.
MAX_DATUMS_PER_CALL = 1000
MAX_BYTES_PER_CALL = 1_000_000  # "1 MB"; kept under 1 MiB so a few bytes of estimate error cannot matter
#: Distinct values per ``Values`` array.
MAX_VALUES_PER_DATUM = 150


def to_api(datum: MetricDatum) -> dict[str, Any]:
    """The ``MetricDatum`` structure of the ``PutMetricData`` API."""
    item: dict[str, Any] = {
        "MetricName": datum.name,
        "Timestamp": datum.timestamp,
        "Unit": datum.unit,
        "StorageResolution": datum.storage_resolution,
    }
    if datum.dimensions:
        item["Dimensions"] = [{"Name": name, "Value": value} for name, value in datum.dimensions]
    if datum.statistics is not None:
        stats = datum.statistics
        item["StatisticValues"] = {
            "SampleCount": stats.sample_count,
            "Sum": stats.sum,
            "Minimum": stats.minimum,
            "Maximum": stats.maximum,
        }
    elif datum.values:
        if len(datum.values) > MAX_VALUES_PER_DATUM:
            raise ValueError(f"{datum.name}: {len(datum.values)} values, the API takes {MAX_VALUES_PER_DATUM}")
        item["Values"] = list(datum.values)
        if datum.counts:
            item["Counts"] = list(datum.counts)
    else:
        item["Value"] = datum.value
    return item


class CloudWatchPublisher:
    """Publishes datums to one CloudWatch namespace.

    Args:
        client: an aioboto3 ``cloudwatch`` client, created once and reused (``AwsClients.client``).
        namespace: the custom namespace (``PRODUCTOS_CLOUDWATCH_NAMESPACE``); never ``AWS/...``.
    """

    def __init__(self, client: Any, namespace: str) -> None:
        if namespace.startswith("AWS/"):
            raise ValueError("custom metrics cannot use an AWS/ namespace")
        self._client = client
        self._namespace = namespace
        self._sizer = _BodySizer(client, namespace)
        self.calls = 0

    @property
    def namespace(self) -> str:
        return self._namespace

    async def publish(self, data: Sequence[MetricDatum]) -> None:
        sent = 0
        for batch in self.batches(data):
            try:
                await self._client.put_metric_data(Namespace=self._namespace, MetricData=batch)
            except Exception as exc:
                raise PublishError(f"PutMetricData failed: {_describe(exc)}", sent=sent) from exc
            finally:
                self.calls += 1
            sent += len(batch)

    def batches(self, data: Sequence[MetricDatum]) -> Iterator[list[dict[str, Any]]]:
        """``data`` as API structures, in order, cut where a call would pass 1000 datums or 1 MB."""
        batch: list[dict[str, Any]] = []
        size = self._sizer.overhead
        for datum in data:
            item = to_api(datum)
            if batch and (
                len(batch) >= MAX_DATUMS_PER_CALL or size + self._sizer.size(item, len(batch) + 1) > MAX_BYTES_PER_CALL
            ):
                yield batch
                batch, size = [], self._sizer.overhead
            batch.append(item)
            size += self._sizer.size(item, len(batch))
        if batch:
            yield batch


class _BodySizer:
    """Bytes a datum adds to the request body, by botocore's serializer of the client's protocol."""

    def __init__(self, client: Any, namespace: str) -> None:
        from botocore.serialize import create_serializer

        model = client.meta.service_model
        self._operation = model.operation_model("PutMetricData")
        self._serializer = create_serializer(model.metadata["protocol"], include_validation=False)
        self._namespace = namespace
        self.overhead = self._body_size([])

    def _body_size(self, items: list[dict[str, Any]]) -> int:
        request = self._serializer.serialize_to_request(
            {"Namespace": self._namespace, "MetricData": items}, self._operation
        )
        body = request["body"]
        if isinstance(body, dict):  # the query serializer leaves the form unencoded
            from urllib.parse import urlencode

            body = urlencode(body)
        return len(body)

    def size(self, item: dict[str, Any], index: int) -> int:
        """Bytes ``item`` adds as member ``index`` of ``MetricData``: each of its keys carries the index."""
        alone = self._body_size([item]) - self.overhead  # as member 1
        return alone + (len(str(index)) - 1) * self._keys(item)

    @staticmethod
    def _keys(item: dict[str, Any]) -> int:
        count = 0
        for value in item.values():
            if isinstance(value, list):
                count += sum(len(v) if isinstance(v, dict) else 1 for v in value)
            elif isinstance(value, dict):
                count += len(value)
            else:
                count += 1
        return count


def _describe(exc: BaseException) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'Unknown')}: {str(error.get('Message', ''))[:200]}"
    return type(exc).__name__
