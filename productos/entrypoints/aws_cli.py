"""``productos aws``: the guide's scaling policies, alarms and dashboard, and the pools' sizes, printed as JSON or
applied.

``productos aws scaling-policies|alarms|dashboard|pool-sizes [--apply]``. The JSON printed is the exact request
each resource is created with (``PutScalingPolicy``, ``PutMetricAlarm``, ``PutDashboard``; the dashboard's body
as an object; ``ssm:PutParameter`` for ``DB_POOL_SIZE`` and ``DB_MAX_OVERFLOW``); ``--apply`` sends those requests
through aioboto3 and prints the same JSON. The requests come from ``productos.infra.aws.resources``; the pool
sizes from ``productos.domain.connection_budget``: the largest pool per worker whose worst case at the Auto
Scaling group's maximum (``--asg-max-size``, else the group's ``MaxSize``) x ``--workers`` fits
``--connection-budget`` (``DB_CONNECTION_BUDGET``), written under ``--ssm-path`` (``PRODUCTOS_SSM_PATH``, else
``/<prefix>/``). The budget also sets the RDS connections alarm (80 % of it).

Names come from options, else from the environment: ``--asg-name`` (``PRODUCTOS_ASG_NAME``), ``--namespace``
(``PRODUCTOS_CLOUDWATCH_NAMESPACE``), ``--alb`` (``PRODUCTOS_ALB``), ``--target-group``
(``PRODUCTOS_TARGET_GROUP``), ``--db-instance`` (``PRODUCTOS_DB_INSTANCE``), ``--api-id``
(``PRODUCTOS_API_ID``) or ``--api-name`` (``PRODUCTOS_API_NAME``), ``--api-stage``, ``--region``
(``AWS_REGION``). The ALB and the target group may be given by name (looked up with
``elasticloadbalancing:DescribeLoadBalancers``/``DescribeTargetGroups``), by ARN, or by ARN suffix
(``app/<name>/<id>``, ``targetgroup/<name>/<id>``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any, TextIO

from productos.domain.errors import ConfigurationError
from productos.infra.aws.clients import describe_aws_failure

COMMANDS = {
    "scaling-policies": "target-tracking policies: CPU 70 %, ALB requests per target 1000, DB pool 80 %",
    "alarms": "alarms: ALB 5XX, RDS CPU, RDS connections at 80 % of the budget, unhealthy hosts, API Gateway 4XX rate",
    "dashboard": "the CloudWatch dashboard: API Gateway, ALB, ASG, RDS and the service's own metrics",
    "pool-sizes": "DB_POOL_SIZE and DB_MAX_OVERFLOW per worker for the ASG's maximum, from the connection budget",
}


def register(commands: Any) -> None:
    """Add ``aws`` and its subcommands to the ``productos`` parser (``argparse`` subparsers)."""
    aws = commands.add_parser("aws", help="scaling policies, alarms and dashboard for CloudWatch / Auto Scaling")
    kinds = aws.add_subparsers(dest="aws_command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, help_text in COMMANDS.items():
        # argparse expands %-formats in help strings: "80 %" must be escaped.
        escaped = help_text.replace("%", "%%")
        command = kinds.add_parser(name, help=escaped, description=escaped)
        _options(command)
        command.set_defaults(handler=_handle)


def _options(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--apply", action="store_true", help="create or update them in AWS (through aioboto3)")
    parser.add_argument("--asg-name", help="the Auto Scaling group (PRODUCTOS_ASG_NAME)")
    parser.add_argument("--namespace", help="the custom metrics' namespace (PRODUCTOS_CLOUDWATCH_NAMESPACE)")
    parser.add_argument("--alb", default=env("PRODUCTOS_ALB"), help="the ALB: name, ARN or app/<name>/<id>")
    parser.add_argument(
        "--target-group",
        default=env("PRODUCTOS_TARGET_GROUP"),
        help="the ASG's target group: name, ARN or targetgroup/<name>/<id>",
    )
    parser.add_argument("--db-instance", default=env("PRODUCTOS_DB_INSTANCE"), help="the RDS instance identifier")
    api = parser.add_mutually_exclusive_group()
    api.add_argument("--api-id", default=env("PRODUCTOS_API_ID"), help="an API Gateway HTTP API's id")
    api.add_argument("--api-name", default=env("PRODUCTOS_API_NAME"), help="an API Gateway REST API's name")
    parser.add_argument("--api-stage", default=env("PRODUCTOS_API_STAGE"), help="the API's stage, if per stage")
    parser.add_argument("--region", help="the region (AWS_REGION)")
    parser.add_argument("--prefix", help="names start with it (default: PRODUCTOS_SERVICE_NAME, productos-api)")
    parser.add_argument(
        "--alarm-action", action="append", default=[], help="an ARN to notify (an SNS topic); repeatable"
    )
    parser.add_argument(
        "--connection-budget", type=int, help="the service's share of the database's connections (DB_CONNECTION_BUDGET)"
    )
    parser.add_argument("--asg-max-size", type=int, help="the ASG's maximum (PRODUCTOS_ASG_MAX_SIZE; else its MaxSize)")
    parser.add_argument("--workers", type=int, help="WORKERS of each instance (pool-sizes)")
    parser.add_argument("--ssm-path", help="where pool-sizes writes (PRODUCTOS_SSM_PATH; default /<prefix>/)")


def _handle(args: argparse.Namespace) -> int:
    return asyncio.run(run(args, out=sys.stdout, err=sys.stderr))


async def run(args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    """Build the requests of ``args.aws_command``, print them, and send them with ``--apply``."""
    from productos.infra.aws import resources
    from productos.infra.aws.clients import AwsClients
    from productos.settings import Settings

    settings = Settings()
    region = args.region or settings.aws_region
    if args.api_id and args.api_name:
        raise ConfigurationError("give --api-id (an HTTP API) or --api-name (a REST API), not both")
    asg_name = args.asg_name or settings.asg_name
    budget = args.connection_budget if args.connection_budget is not None else settings.db_connection_budget
    if budget is not None and budget < 1:
        raise ConfigurationError(f"the connection budget must be at least 1, not {budget}")
    if args.aws_command == "pool-sizes":
        sizing = settings.model_copy(
            update={
                "aws_region": region,
                "asg_name": asg_name,
                "asg_max_size": args.asg_max_size or settings.asg_max_size,
            }
        )
        async with AwsClients.from_settings(sizing) as aws:
            parameters = await _pool_size_parameters(args, sizing, aws, budget, err)
            if args.apply:
                await _apply(aws, args.aws_command, parameters, err)
        json.dump(parameters, out, indent=2)
        out.write("\n")
        return 0
    if not asg_name:
        raise ConfigurationError("no Auto Scaling group: give --asg-name or set PRODUCTOS_ASG_NAME")
    if (args.apply or args.aws_command == "dashboard") and not region:
        raise ConfigurationError("no region: give --region or set AWS_REGION")
    async with AwsClients.from_settings(settings.model_copy(update={"aws_region": region})) as aws:
        load_balancer = await _load_balancer(aws, args.alb) if args.alb else None
        target_group = await _target_group(aws, args.target_group) if args.target_group else None
        try:
            deployment = resources.Deployment(
                asg_name=asg_name,
                namespace=args.namespace or settings.cloudwatch_namespace,
                load_balancer=load_balancer,
                target_group=target_group,
                db_instance=args.db_instance,
                api_id=args.api_id,
                api_name=args.api_name,
                api_stage=args.api_stage,
                region=region or "us-east-1",
                prefix=args.prefix or settings.service_name,
                alarm_actions=tuple(args.alarm_action),
                connection_budget=budget,
            )
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from exc
        requests: Any
        if args.aws_command == "scaling-policies":
            requests = resources.scaling_policies(deployment)
        elif args.aws_command == "alarms":
            requests = resources.alarms(deployment)
        else:
            requests = resources.dashboard(deployment)
        for note in resources.missing(deployment, args.aws_command):
            print(f"left out: {note}", file=err)
        if args.apply:
            await _apply(aws, args.aws_command, requests, err)
    json.dump(requests, out, indent=2)
    out.write("\n")
    return 0


async def _pool_size_parameters(
    args: argparse.Namespace, settings: Any, aws: Any, budget: int | None, err: TextIO
) -> list[dict[str, Any]]:
    """The ``ssm:PutParameter`` requests of ``DB_POOL_SIZE`` and ``DB_MAX_OVERFLOW`` that fit the budget."""
    from productos.domain.connection_budget import ConnectionDemand, fit_pool_sizes
    from productos.entrypoints.budget import asg_maximum, pool_ceiling

    if budget is None:
        raise ConfigurationError(
            "no connection budget: give --connection-budget or set DB_CONNECTION_BUDGET (the service's share of the "
            "database's max_connections; `productos check` shows what the server allows)"
        )
    workers = (
        args.workers
        if args.workers is not None
        else (settings.workers if "workers" in settings.model_fields_set else None)
    )
    if workers is None or workers < 1:
        raise ConfigurationError("give --workers or set WORKERS: the gunicorn workers of each instance (its vCPUs)")
    instances, source = await asg_maximum(settings, aws, required=True)
    sizes = fit_pool_sizes(budget, instances=instances, workers=workers, ceiling=pool_ceiling())
    demand = ConnectionDemand(instances, workers, sizes.per_worker)
    print(f"pool sizes: at worst {demand.describe()} connections ({source}), budget {budget}", file=err)
    path = args.ssm_path or settings.ssm_path or f"/{args.prefix or settings.service_name}/"
    if not path.startswith("/"):
        raise ConfigurationError(f"the SSM path must start with '/', not {path!r}")
    path = path if path.endswith("/") else path + "/"
    return [
        {
            "Name": f"{path}{name}",
            "Value": str(value),
            "Type": "String",
            "Overwrite": True,
            "Description": f"{name.upper().replace('-', '_')} of each worker: {demand.describe()} <= {budget}",
        }
        for name, value in (("db-pool-size", sizes.pool_size), ("db-max-overflow", sizes.max_overflow))
    ]


#: What each command applies, and the IAM permission it needs, for failure messages.
_APPLIED = {
    "scaling-policies": ("the scaling policies", "autoscaling:PutScalingPolicy"),
    "alarms": ("the alarms", "cloudwatch:PutMetricAlarm"),
    "dashboard": ("the dashboard", "cloudwatch:PutDashboard"),
    "pool-sizes": ("the pool sizes", "ssm:PutParameter"),
}
_SETTING = "the AWS credentials and AWS_REGION"


async def _apply(aws: Any, command: str, requests: Any, err: TextIO) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if command == "scaling-policies":
            autoscaling = await aws.client("autoscaling")
            for request in requests:
                await autoscaling.put_scaling_policy(**request)
                print(f"applied scaling policy {request['PolicyName']}", file=err)
        elif command == "alarms":
            cloudwatch = await aws.client("cloudwatch")
            for request in requests:
                await cloudwatch.put_metric_alarm(**request)
                print(f"applied alarm {request['AlarmName']}", file=err)
        elif command == "pool-sizes":
            ssm = await aws.client("ssm")
            for request in requests:
                await ssm.put_parameter(**request)
                print(f"applied parameter {request['Name']} = {request['Value']}", file=err)
        else:
            cloudwatch = await aws.client("cloudwatch")
            answer = await cloudwatch.put_dashboard(
                DashboardName=requests["DashboardName"], DashboardBody=json.dumps(requests["DashboardBody"])
            )
            for problem in answer.get("DashboardValidationMessages", []):
                print(f"dashboard: {problem.get('DataPath', '')}: {problem.get('Message', '')}", file=err)
            print(f"applied dashboard {requests['DashboardName']}", file=err)
    except (ClientError, BotoCoreError) as exc:
        what, permission = _APPLIED[command]
        raise describe_aws_failure(exc, what=what, setting=_SETTING, permission=permission, action="apply") from exc


async def _load_balancer(aws: Any, value: str) -> str:
    """The ALB's ARN suffix (``app/<name>/<id>``) from a name, an ARN or the suffix itself."""
    if value.startswith(("app/", "net/")):
        return value
    if value.startswith("arn:"):
        return value.split(":loadbalancer/", 1)[-1]
    elbv2 = await aws.client("elbv2")
    try:
        found = await elbv2.describe_load_balancers(Names=[value])
    except Exception as exc:
        what = f"the load balancer {value!r}"
        raise describe_aws_failure(
            exc, what=what, setting="--alb", permission="elasticloadbalancing:DescribeLoadBalancers", action="find"
        ) from exc
    return str(found["LoadBalancers"][0]["LoadBalancerArn"]).split(":loadbalancer/", 1)[-1]


async def _target_group(aws: Any, value: str) -> str:
    """The target group's ARN suffix (``targetgroup/<name>/<id>``) from a name, an ARN or the suffix."""
    if value.startswith("targetgroup/"):
        return value
    if value.startswith("arn:"):
        return "targetgroup/" + value.split(":targetgroup/", 1)[-1]
    elbv2 = await aws.client("elbv2")
    try:
        found = await elbv2.describe_target_groups(Names=[value])
    except Exception as exc:
        what = f"the target group {value!r}"
        raise describe_aws_failure(
            exc,
            what=what,
            setting="--target-group",
            permission="elasticloadbalancing:DescribeTargetGroups",
            action="find",
        ) from exc
    return "targetgroup/" + str(found["TargetGroups"][0]["TargetGroupArn"]).split(":targetgroup/", 1)[-1]
