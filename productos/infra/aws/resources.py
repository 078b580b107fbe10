"""The guide's scaling policies, alarms and dashboard as AWS API requests: pure functions, no I/O.

Each function returns the exact parameters of the API call that creates the resource
(``autoscaling:PutScalingPolicy``, ``cloudwatch:PutMetricAlarm``, ``cloudwatch:PutDashboard``), so
``productos aws ... --apply`` sends them as they are and a CloudFormation template can be checked against
them. The third scaling policy reads what ``productos.observability.publishing`` publishes: the names come
from ``productos.domain.metrics_ports``, the one place both sides take them from.

Resources not named in the ``Deployment`` are left out (an API Gateway the service is not behind has no
alarm); ``missing`` says which and the option that adds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from productos.domain.connection_budget import ALARM_SHARE
from productos.domain.dashboards import PANELS, POOL_TARGET
from productos.domain.metrics_ports import (
    ASG_DIMENSION,
    DB_POOL_UTILIZATION,
    DEFAULT_NAMESPACE,
    POOL_STATISTIC,
    UNITS,
)

#: The guide's targets.
CPU_TARGET = 70.0
REQUESTS_PER_TARGET = 1000.0
#: Seconds a new instance needs before its figures count (the ASG's health-check grace period).
INSTANCE_WARMUP = 300


@dataclass(frozen=True)
class Deployment:
    """What the resources are about.

    Attributes:
        asg_name: the Auto Scaling group.
        namespace: the custom metrics' namespace (``PRODUCTOS_CLOUDWATCH_NAMESPACE``).
        load_balancer: the ALB's ARN suffix, ``app/<name>/<id>`` (its CloudWatch dimension).
        target_group: the target group's ARN suffix, ``targetgroup/<name>/<id>``.
        db_instance: the RDS instance identifier.
        api_id: an API Gateway HTTP API's id (metrics ``4xx``, ``5xx``, ``Count`` by ``ApiId``).
        api_name: a REST API's name (metrics ``4XXError``, ``5XXError``, ``Count`` by ``ApiName``).
        api_stage: the API's stage, if its metrics are per stage.
        region: the dashboard's region.
        prefix: names start with it (``productos-api-cpu-70``).
        alarm_actions: ARNs notified when an alarm fires and clears (SNS topics).
        connection_budget: the service's share of the database's connections (``DB_CONNECTION_BUDGET``), for the
            RDS connections alarm.
    """

    asg_name: str
    namespace: str = DEFAULT_NAMESPACE
    load_balancer: str | None = None
    target_group: str | None = None
    db_instance: str | None = None
    api_id: str | None = None
    api_name: str | None = None
    api_stage: str | None = None
    region: str = "us-east-1"
    prefix: str = "productos-api"
    alarm_actions: tuple[str, ...] = field(default=())
    connection_budget: int | None = None

    def __post_init__(self) -> None:
        if not self.asg_name:
            raise ValueError("an Auto Scaling group name is needed")
        if self.api_id and self.api_name:
            raise ValueError("give the HTTP API's id or the REST API's name, not both")
        if self.load_balancer and not self.load_balancer.startswith(("app/", "net/")):
            raise ValueError(f"the load balancer must be an ARN suffix app/<name>/<id>, not {self.load_balancer!r}")
        if self.connection_budget is not None and self.connection_budget < 1:
            raise ValueError(f"the connection budget must be at least 1, not {self.connection_budget}")
        if self.target_group and not self.target_group.startswith("targetgroup/"):
            raise ValueError(
                f"the target group must be an ARN suffix targetgroup/<name>/<id>, not {self.target_group!r}"
            )

    @property
    def resource_label(self) -> str | None:
        """``ALBRequestCountPerTarget``'s resource label: ``app/<alb>/<id>/targetgroup/<tg>/<id>``."""
        if self.load_balancer and self.target_group:
            return f"{self.load_balancer}/{self.target_group}"
        return None


def _dimensions(**pairs: str | None) -> list[dict[str, str]]:
    return [{"Name": name, "Value": value} for name, value in pairs.items() if value]


def pool_metric(deployment: Deployment) -> dict[str, Any]:
    """The ``CustomizedMetricSpecification`` of the third policy: what the publisher sends, exactly."""
    return {
        "MetricName": DB_POOL_UTILIZATION,
        "Namespace": deployment.namespace,
        "Dimensions": _dimensions(**{ASG_DIMENSION: deployment.asg_name}),
        "Statistic": POOL_STATISTIC,
        "Unit": UNITS[DB_POOL_UTILIZATION],
    }


def scaling_policies(deployment: Deployment) -> list[dict[str, Any]]:
    """``PutScalingPolicy`` requests: CPU 70 %, ALB requests per target 1000, DB pool utilization 80 %."""
    base = {
        "AutoScalingGroupName": deployment.asg_name,
        "PolicyType": "TargetTrackingScaling",
        "EstimatedInstanceWarmup": INSTANCE_WARMUP,
    }
    policies = [
        {
            **base,
            "PolicyName": f"{deployment.prefix}-cpu-{CPU_TARGET:g}",
            "TargetTrackingConfiguration": {
                "PredefinedMetricSpecification": {"PredefinedMetricType": "ASGAverageCPUUtilization"},
                "TargetValue": CPU_TARGET,
            },
        }
    ]
    if deployment.resource_label:
        policies.append(
            {
                **base,
                "PolicyName": f"{deployment.prefix}-alb-requests-{REQUESTS_PER_TARGET:g}",
                "TargetTrackingConfiguration": {
                    "PredefinedMetricSpecification": {
                        "PredefinedMetricType": "ALBRequestCountPerTarget",
                        "ResourceLabel": deployment.resource_label,
                    },
                    "TargetValue": REQUESTS_PER_TARGET,
                },
            }
        )
    policies.append(
        {
            **base,
            "PolicyName": f"{deployment.prefix}-db-pool-{POOL_TARGET:g}",
            "TargetTrackingConfiguration": {
                "CustomizedMetricSpecification": pool_metric(deployment),
                "TargetValue": POOL_TARGET,
            },
        }
    )
    return policies


def _metric_stat(namespace: str, name: str, dimensions: list[dict[str, str]], stat: str, period: int) -> Any:
    return {
        "Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dimensions},
        "Period": period,
        "Stat": stat,
    }


def _api(deployment: Deployment) -> tuple[list[dict[str, str]], str, str, str] | None:
    """The API's dimensions and its 4XX, 5XX and request-count metric names (HTTP API or REST API)."""
    if deployment.api_id:
        return _dimensions(ApiId=deployment.api_id, Stage=deployment.api_stage), "4xx", "5xx", "Count"
    if deployment.api_name:
        return (
            _dimensions(ApiName=deployment.api_name, Stage=deployment.api_stage),
            "4XXError",
            "5XXError",
            "Count",
        )
    return None


def alarms(deployment: Deployment) -> list[dict[str, Any]]:
    """``PutMetricAlarm`` requests: ALB 5XX > 10 in 5 min, RDS CPU > 80 % for 10 min, RDS connections at 80 % of
    the connection budget for 5 min, unhealthy hosts > 0, API Gateway 4XX rate > 20 %."""
    actions: dict[str, Any] = {}
    if deployment.alarm_actions:
        actions = {
            "AlarmActions": list(deployment.alarm_actions),
            "OKActions": list(deployment.alarm_actions),
        }
    out: list[dict[str, Any]] = []
    if deployment.load_balancer:
        lb = _dimensions(LoadBalancer=deployment.load_balancer)
        out.append(
            {
                "AlarmName": f"{deployment.prefix}-alb-5xx",
                "AlarmDescription": "ALB 5XX responses (targets' and the ALB's own) > 10 in 5 minutes",
                "Metrics": [
                    {
                        "Id": "target",
                        "MetricStat": _metric_stat("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", lb, "Sum", 300),
                        "ReturnData": False,
                    },
                    {
                        "Id": "elb",
                        "MetricStat": _metric_stat("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", lb, "Sum", 300),
                        "ReturnData": False,
                    },
                    {
                        "Id": "errors",
                        "Expression": "FILL(target, 0) + FILL(elb, 0)",
                        "Label": "ALB 5XX",
                        "ReturnData": True,
                    },
                ],
                "EvaluationPeriods": 1,
                "Threshold": 10.0,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
                **actions,
            }
        )
    if deployment.db_instance:
        out.append(
            {
                "AlarmName": f"{deployment.prefix}-rds-cpu",
                "AlarmDescription": "RDS CPU > 80 % for 10 minutes",
                "Namespace": "AWS/RDS",
                "MetricName": "CPUUtilization",
                "Dimensions": _dimensions(DBInstanceIdentifier=deployment.db_instance),
                "Statistic": "Average",
                "Period": 300,
                "EvaluationPeriods": 2,
                "DatapointsToAlarm": 2,
                "Threshold": 80.0,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "missing",
                **actions,
            }
        )
    if deployment.db_instance and deployment.connection_budget:
        budget = deployment.connection_budget
        out.append(
            {
                "AlarmName": f"{deployment.prefix}-rds-connections",
                "AlarmDescription": (
                    f"RDS connections at {ALARM_SHARE * 100:g} % of the service's budget of {budget} for 5 minutes"
                ),
                "Namespace": "AWS/RDS",
                "MetricName": "DatabaseConnections",
                "Dimensions": _dimensions(DBInstanceIdentifier=deployment.db_instance),
                "Statistic": "Maximum",
                "Period": 60,
                "EvaluationPeriods": 5,
                "DatapointsToAlarm": 5,
                "Threshold": round(ALARM_SHARE * budget, 1),
                "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                "TreatMissingData": "missing",
                **actions,
            }
        )
    if deployment.load_balancer and deployment.target_group:
        out.append(
            {
                "AlarmName": f"{deployment.prefix}-unhealthy-hosts",
                "AlarmDescription": "Unhealthy targets > 0 for 2 minutes (the ASG's unhealthy instances)",
                "Namespace": "AWS/ApplicationELB",
                "MetricName": "UnHealthyHostCount",
                "Dimensions": _dimensions(TargetGroup=deployment.target_group, LoadBalancer=deployment.load_balancer),
                "Statistic": "Maximum",
                "Period": 60,
                "EvaluationPeriods": 2,
                "DatapointsToAlarm": 2,
                "Threshold": 0.0,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
                **actions,
            }
        )
    api = _api(deployment)
    if api is not None:
        dims, four, _, count = api
        out.append(
            {
                "AlarmName": f"{deployment.prefix}-api-4xx-rate",
                "AlarmDescription": "API Gateway 4XX responses > 20 % of requests over 5 minutes",
                "Metrics": [
                    {
                        "Id": "errors",
                        "MetricStat": _metric_stat("AWS/ApiGateway", four, dims, "Sum", 300),
                        "ReturnData": False,
                    },
                    {
                        "Id": "requests",
                        "MetricStat": _metric_stat("AWS/ApiGateway", count, dims, "Sum", 300),
                        "ReturnData": False,
                    },
                    {
                        "Id": "rate",
                        "Expression": "IF(requests > 0, 100 * errors / requests, 0)",
                        "Label": "4XX rate (%)",
                        "ReturnData": True,
                    },
                ],
                "EvaluationPeriods": 1,
                "Threshold": 20.0,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
                **actions,
            }
        )
    return out


def _widget(title: str, metrics: list[list[Any]], region: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "metric",
        "width": 8,
        "height": 6,
        "properties": {
            "title": title,
            "region": region,
            "view": "timeSeries",
            "metrics": metrics,
            **properties,
        },
    }


def dashboard(deployment: Deployment) -> dict[str, Any]:
    """The ``PutDashboard`` request (``DashboardBody`` as an object; send it JSON-encoded): API Gateway, ALB,
    ASG, RDS and the service's own metrics, a row each."""
    region = deployment.region
    rows: list[tuple[str, list[dict[str, Any]]]] = []
    api = _api(deployment)
    if api is not None:
        dims, four, five, count = api
        flat = [item for d in dims for item in (d["Name"], d["Value"])]
        rows.append(
            (
                "API Gateway",
                [
                    _widget("API Gateway: requests", [["AWS/ApiGateway", count, *flat]], region, stat="Sum"),
                    _widget(
                        "API Gateway: latency (ms)",
                        [
                            ["AWS/ApiGateway", "Latency", *flat, {"stat": "p50"}],
                            ["AWS/ApiGateway", "Latency", *flat, {"stat": "p99"}],
                        ],
                        region,
                    ),
                    _widget(
                        "API Gateway: 4XX / 5XX",
                        [["AWS/ApiGateway", four, *flat], ["AWS/ApiGateway", five, *flat]],
                        region,
                        stat="Sum",
                    ),
                ],
            )
        )
    if deployment.load_balancer:
        lb = ["LoadBalancer", deployment.load_balancer]
        target = ["TargetGroup", deployment.target_group, *lb] if deployment.target_group else lb
        rows.append(
            (
                "Application Load Balancer",
                [
                    _widget(
                        "ALB: target response time (s)",
                        [
                            ["AWS/ApplicationELB", "TargetResponseTime", *lb, {"stat": "p50"}],
                            ["AWS/ApplicationELB", "TargetResponseTime", *lb, {"stat": "p99"}],
                        ],
                        region,
                    ),
                    _widget(
                        "ALB: healthy / unhealthy hosts",
                        [
                            ["AWS/ApplicationELB", "HealthyHostCount", *target],
                            ["AWS/ApplicationELB", "UnHealthyHostCount", *target],
                        ],
                        region,
                        stat="Maximum",
                    ),
                    _widget(
                        "ALB: requests and 5XX",
                        [
                            ["AWS/ApplicationELB", "RequestCount", *lb],
                            ["AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", *lb],
                            ["AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", *lb],
                        ],
                        region,
                        stat="Sum",
                    ),
                ],
            )
        )
    asg = [ASG_DIMENSION, deployment.asg_name]
    rows.append(
        (
            "Auto Scaling group",
            [
                _widget(
                    "ASG: desired / in service (group metrics collection on)",
                    [
                        ["AWS/AutoScaling", "GroupDesiredCapacity", *asg],
                        ["AWS/AutoScaling", "GroupInServiceInstances", *asg],
                    ],
                    region,
                    stat="Average",
                ),
                _widget("ASG: CPU (%)", [["AWS/EC2", "CPUUtilization", *asg]], region, stat="Average"),
            ],
        )
    )
    if deployment.db_instance:
        db = ["DBInstanceIdentifier", deployment.db_instance]
        budget = deployment.connection_budget
        budget_line = {"annotations": {"horizontal": [{"label": "budget", "value": budget}]}} if budget else {}
        rows.append(
            (
                "RDS",
                [
                    _widget(
                        "RDS: connections",
                        [["AWS/RDS", "DatabaseConnections", *db]],
                        region,
                        stat="Maximum",
                        **budget_line,
                    ),
                    _widget("RDS: CPU (%)", [["AWS/RDS", "CPUUtilization", *db]], region, stat="Average"),
                    _widget(
                        "RDS: free storage (bytes)",
                        [["AWS/RDS", "FreeStorageSpace", *db]],
                        region,
                        stat="Minimum",
                    ),
                ],
            )
        )
    ns = deployment.namespace
    rows.append(
        (
            "productos",
            [
                _widget(
                    panel.title,
                    [[ns, metric, *asg, {"stat": stat}] for metric, stat in panel.cloudwatch],
                    region,
                    **(
                        {
                            "annotations": {"horizontal": [{"label": "target", "value": panel.threshold}]},
                            "yAxis": {"left": {"min": 0, "max": 100}},
                        }
                        if panel.threshold is not None
                        else {}
                    ),
                )
                for panel in PANELS
            ],
        )
    )
    widgets: list[dict[str, Any]] = []
    y = 0
    for title, row in rows:
        widgets.append(
            {
                "type": "text",
                "x": 0,
                "y": y,
                "width": 24,
                "height": 1,
                "properties": {"markdown": f"## {title}"},
            }
        )
        y += 1
        for index, widget in enumerate(row):
            widgets.append({**widget, "x": (index % 3) * 8, "y": y + (index // 3) * 6})
        y += 6 * ((len(row) + 2) // 3)
    return {"DashboardName": deployment.prefix, "DashboardBody": {"widgets": widgets}}


def missing(deployment: Deployment, kind: str = "all") -> list[str]:
    """What ``kind`` (``scaling-policies``, ``alarms``, ``dashboard``, ``all``) leaves out for want of a name,
    and the option that adds it."""
    notes = []
    if not deployment.resource_label:
        if kind in ("scaling-policies", "all"):
            notes.append("the ALB requests-per-target policy: give --alb and --target-group")
        if kind in ("alarms", "all") and not deployment.load_balancer:
            notes.append("the ALB 5XX alarm: give --alb")
        if kind in ("alarms", "all"):
            notes.append("the unhealthy-hosts alarm: give --alb and --target-group")
        if kind in ("dashboard", "all") and not deployment.load_balancer:
            notes.append("the ALB widgets: give --alb")
    if kind != "scaling-policies":
        if not deployment.db_instance:
            notes.append(f"the RDS {'alarms' if kind == 'alarms' else 'widgets'}: give --db-instance")
        elif kind in ("alarms", "all") and not deployment.connection_budget:
            notes.append("the RDS connections alarm: give --connection-budget (DB_CONNECTION_BUDGET)")
        if not (deployment.api_id or deployment.api_name):
            notes.append(
                f"the API Gateway {'alarm' if kind == 'alarms' else 'widgets'}: give --api-id (HTTP API) or "
                "--api-name (REST API)"
            )
    return notes
