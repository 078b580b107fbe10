"""The service's dashboard panels, defined once: each names its CloudWatch metric (as the publishing loop sends
it) and the Prometheus query over what ``/metrics`` exposes. The CloudWatch dashboard
(``productos.infra.aws.resources.dashboard``) and the Grafana dashboard (``productos.observability.grafana``)
are both rendered from this list, so the two show the same figures."""

from __future__ import annotations

from dataclasses import dataclass

from productos.domain.metrics_ports import (
    DB_CONNECTIONS_IN_USE,
    DB_POOL_UTILIZATION,
    DB_QUERY_TIME,
    METRICS_DROPPED,
    POOL_STATISTIC,
    REQUEST_COUNT,
    REQUEST_LATENCY,
)

__all__ = ["PANELS", "POOL_TARGET", "Panel"]

#: The target-tracking policy's target for ``DBPoolUtilization`` (percent).
POOL_TARGET = 80.0


@dataclass(frozen=True)
class Panel:
    """One panel: a title, a unit, the CloudWatch metrics with their statistics, and the equivalent PromQL."""

    title: str
    unit: str
    #: ``(metric name, statistic)`` in the service's CloudWatch namespace, ``AutoScalingGroupName`` dimension.
    cloudwatch: tuple[tuple[str, str], ...]
    #: ``(legend, PromQL expression)``; ``$__rate_interval`` as Grafana defines it.
    prometheus: tuple[tuple[str, str], ...]
    #: A horizontal line (the scaling target), if any.
    threshold: float | None = None


def _quantile(q: float, histogram: str, scale: str = "") -> str:
    rate = f"sum by (le) (rate({histogram}_bucket[$__rate_interval]))"
    return f"histogram_quantile({q}, {rate}){scale}"


PANELS: tuple[Panel, ...] = (
    Panel(
        title="DB pool utilization (%): the scaling policy's metric",
        unit="percent",
        cloudwatch=((DB_POOL_UTILIZATION, POOL_STATISTIC),),
        prometheus=(
            (
                "in use / max",
                '100 * sum(db_client_connection_count{db_client_connection_state="used"}) '
                "/ sum(db_client_connection_max)",
            ),
        ),
        threshold=POOL_TARGET,
    ),
    Panel(
        title="DB connections in use",
        unit="short",
        cloudwatch=((DB_CONNECTIONS_IN_USE, "Average"), (DB_CONNECTIONS_IN_USE, "Maximum")),
        prometheus=(
            ("used", 'sum(db_client_connection_count{db_client_connection_state="used"})'),
            ("idle", 'sum(db_client_connection_count{db_client_connection_state="idle"})'),
            ("waiting", "sum(db_client_connection_pending_requests)"),
        ),
    ),
    Panel(
        title="DB query time (ms)",
        unit="ms",
        cloudwatch=((DB_QUERY_TIME, "p50"), (DB_QUERY_TIME, "p99")),
        prometheus=(
            ("p50", _quantile(0.5, "db_client_operation_duration_seconds", " * 1000")),
            ("p99", _quantile(0.99, "db_client_operation_duration_seconds", " * 1000")),
        ),
    ),
    Panel(
        title="Request latency (ms)",
        unit="ms",
        cloudwatch=((REQUEST_LATENCY, "p50"), (REQUEST_LATENCY, "p90"), (REQUEST_LATENCY, "p99")),
        prometheus=(
            ("p50", _quantile(0.5, "http_server_request_duration_seconds", " * 1000")),
            ("p90", _quantile(0.9, "http_server_request_duration_seconds", " * 1000")),
            ("p99", _quantile(0.99, "http_server_request_duration_seconds", " * 1000")),
        ),
    ),
    Panel(
        title="Requests and dropped datapoints",
        unit="short",
        cloudwatch=((REQUEST_COUNT, "Sum"), (METRICS_DROPPED, "Sum")),
        prometheus=(
            ("requests/s", "sum(rate(http_server_request_duration_seconds_count[$__rate_interval]))"),
            (
                "5xx/s",
                'sum(rate(http_server_request_duration_seconds_count{http_response_status_code=~"5.."}'
                "[$__rate_interval]))",
            ),
        ),
    ),
)
