"""The adapters' pure parts: EMF documents, CloudWatch batching to the API's limits (no call is made)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import boto3
import pytest

from productos.domain.metrics_ports import MetricDatum, MetricsPublisher, StatisticSet
from productos.infra.aws.cloudwatch import (
    MAX_BYTES_PER_CALL,
    MAX_DATUMS_PER_CALL,
    CloudWatchPublisher,
    to_api,
)
from productos.infra.aws.emf import EmfPublisher, emf_values
from productos.infra.aws.imds import _parse

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
ASG = (("AutoScalingGroupName", "productos-asg"),)
PER_INSTANCE = (("AutoScalingGroupName", "productos-asg"), ("InstanceId", "i-0abc"))


def step(dimensions: tuple[tuple[str, str], ...]) -> list[MetricDatum]:
    return [
        MetricDatum("RequestCount", "Count", NOW, dimensions, value=42.0, storage_resolution=1),
        MetricDatum(
            "RequestLatency",
            "Milliseconds",
            NOW,
            dimensions,
            values=(2.5, 7.5),
            counts=(2, 1),
            storage_resolution=1,
        ),
    ]


# --- EMF ----------------------------------------------------------------------------------------------------


async def test_emf_writes_one_document_for_both_copies_of_a_step() -> None:
    out = io.StringIO()
    publisher = EmfPublisher("Productos", out)
    assert isinstance(publisher, MetricsPublisher)
    await publisher.publish(step(ASG) + step(PER_INSTANCE))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    directive = doc["_aws"]["CloudWatchMetrics"][0]
    assert doc["_aws"]["Timestamp"] == int(NOW.timestamp() * 1000)
    assert directive["Namespace"] == "Productos"
    assert directive["Dimensions"] == [["AutoScalingGroupName"], ["AutoScalingGroupName", "InstanceId"]]
    assert directive["Metrics"] == [
        {"Name": "RequestCount", "Unit": "Count", "StorageResolution": 1},
        {"Name": "RequestLatency", "Unit": "Milliseconds", "StorageResolution": 1},
    ]
    assert doc["AutoScalingGroupName"] == "productos-asg" and doc["InstanceId"] == "i-0abc"
    assert doc["RequestCount"] == 42.0
    assert doc["RequestLatency"] == [2.5, 2.5, 7.5]  # each value as often as it occurred


async def test_emf_keeps_apart_figures_that_differ_between_dimension_sets() -> None:
    out = io.StringIO()
    other = [MetricDatum("RequestCount", "Count", NOW, PER_INSTANCE, value=1.0)]
    await EmfPublisher("Productos", out).publish(step(ASG) + other)
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["RequestCount"] for d in docs] == [42.0, 1.0]
    assert "StorageResolution" not in docs[1]["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]


def test_emf_writes_large_distributions_as_100_values_at_even_ranks() -> None:
    datum = MetricDatum("RequestLatency", "Milliseconds", NOW, values=(1.0, 10.0, 100.0), counts=(900, 90, 10))
    values = emf_values(datum)
    assert isinstance(values, list) and len(values) == 100
    assert values.count(1.0) == 90 and values.count(10.0) == 9 and values.count(100.0) == 1  # p99 is 100 ms
    assert emf_values(MetricDatum("X", "Count", NOW, statistics=StatisticSet(4, 10.0, 1.0, 4.0))) == 2.5


# --- CloudWatch batching ------------------------------------------------------------------------------------


@pytest.fixture
def publisher() -> CloudWatchPublisher:
    # A real botocore client for its serializer; nothing here sends a request.
    client = boto3.client("cloudwatch", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return CloudWatchPublisher(client, "Productos")


def test_the_api_structure() -> None:
    item = to_api(step(PER_INSTANCE)[1])
    assert item == {
        "MetricName": "RequestLatency",
        "Timestamp": NOW,
        "Unit": "Milliseconds",
        "StorageResolution": 1,
        "Dimensions": [
            {"Name": "AutoScalingGroupName", "Value": "productos-asg"},
            {"Name": "InstanceId", "Value": "i-0abc"},
        ],
        "Values": [2.5, 7.5],
        "Counts": [2, 1],
    }
    stats = to_api(MetricDatum("X", "Count", NOW, statistics=StatisticSet(3, 6.0, 1.0, 3.0)))
    assert stats["StatisticValues"] == {"SampleCount": 3, "Sum": 6.0, "Minimum": 1.0, "Maximum": 3.0}


def test_batches_stop_at_1000_datums(publisher: CloudWatchPublisher) -> None:
    data = [MetricDatum("RequestCount", "Count", NOW, ASG, value=float(i)) for i in range(2500)]
    sizes = [len(batch) for batch in publisher.batches(data)]
    assert sizes == [MAX_DATUMS_PER_CALL, MAX_DATUMS_PER_CALL, 500]


def test_batches_stop_before_1_mb(publisher: CloudWatchPublisher) -> None:
    wide = tuple(float(i) + 0.123456 for i in range(150))
    data = [
        MetricDatum("RequestLatency", "Milliseconds", NOW, PER_INSTANCE, values=wide, counts=(1.0,) * 150)
        for _ in range(600)
    ]
    batches = list(publisher.batches(data))
    assert len(batches) >= 2 and sum(len(b) for b in batches) == 600
    from urllib.parse import urlencode

    from botocore.serialize import create_serializer

    client = boto3.client("cloudwatch", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    serializer = create_serializer("query")
    model = client.meta.service_model.operation_model("PutMetricData")
    for batch in batches:
        body = serializer.serialize_to_request({"Namespace": "Productos", "MetricData": batch}, model)["body"]
        assert len(urlencode(body)) <= MAX_BYTES_PER_CALL
    # Exact, not conservative: one more datum would have passed the limit.
    over = serializer.serialize_to_request(
        {"Namespace": "Productos", "MetricData": batches[0] + batches[1][:1]}, model
    )["body"]
    assert len(urlencode(over)) > MAX_BYTES_PER_CALL


def test_an_aws_namespace_is_refused(publisher: CloudWatchPublisher) -> None:
    with pytest.raises(ValueError, match="AWS/"):
        CloudWatchPublisher(object(), "AWS/EC2")


# --- IMDS responses -----------------------------------------------------------------------------------------


def test_imds_responses_are_read_up_to_their_length() -> None:
    assert _parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\ni-0abc1234extra") == (200, "i-0abc1234")
    assert _parse(b"HTTP/1.1 404 Not Found\r\n\r\n") == (404, "")
