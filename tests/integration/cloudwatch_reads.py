"""Reading back what was published to moto, with boto3 (test side only).

moto's ``get_metric_statistics`` matches dimensions as a subset (asking for ``AutoScalingGroupName`` also
returns the per-instance copies), where CloudWatch matches them exactly; ``get_metric_data`` matches exactly
in moto too, so ``statistics`` reads through it. moto computes no percentiles (``p99``): neither does this.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

REGION = "us-east-1"
STATISTICS = ("SampleCount", "Sum", "Minimum", "Maximum", "Average")


def cloudwatch(endpoint: str) -> Any:
    return boto3.client(
        "cloudwatch", region_name=REGION, endpoint_url=endpoint,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


def statistics(
    endpoint: str,
    name: str,
    dimensions: tuple[tuple[str, str], ...],
    *,
    namespace: str = "Productos",
    since: datetime | None = None,
) -> dict[str, float]:
    """Every statistic of ``name`` with exactly ``dimensions``, over one period covering the last hour."""
    now = datetime.now(UTC)
    start = since or now - timedelta(hours=1)
    period = int((now + timedelta(minutes=5) - start).total_seconds()) + 1
    queries = [
        {
            "Id": stat.lower(),
            "MetricStat": {
                "Metric": {
                    "Namespace": namespace,
                    "MetricName": name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions],
                },
                "Period": period,
                "Stat": stat,
            },
        }
        for stat in STATISTICS
    ]
    answer = cloudwatch(endpoint).get_metric_data(
        MetricDataQueries=queries, StartTime=start, EndTime=start + timedelta(seconds=period)
    )
    out: dict[str, float] = {}
    for result, stat in zip(answer["MetricDataResults"], STATISTICS, strict=True):
        if result["Values"]:
            out[stat] = float(result["Values"][0])
    return out


def series(
    endpoint: str,
    name: str,
    dimensions: tuple[tuple[str, str], ...],
    *,
    stat: str = "Average",
    period: int = 1,
    since: datetime,
    until: datetime | None = None,
    namespace: str = "Productos",
) -> list[tuple[datetime, float]]:
    """``stat`` of ``name`` per ``period`` seconds, oldest first."""
    query = {
        "Id": "m",
        "MetricStat": {
            "Metric": {
                "Namespace": namespace,
                "MetricName": name,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions],
            },
            "Period": period,
            "Stat": stat,
        },
    }
    answer = cloudwatch(endpoint).get_metric_data(
        MetricDataQueries=[query],
        StartTime=since,
        EndTime=until or datetime.now(UTC) + timedelta(seconds=period),
        ScanBy="TimestampAscending",
    )
    result = answer["MetricDataResults"][0]
    return list(zip(result["Timestamps"], result["Values"], strict=True))
