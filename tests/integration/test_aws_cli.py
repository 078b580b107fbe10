"""``productos aws scaling-policies|alarms|dashboard [--apply]`` against moto's server over HTTP: what is
applied reads back equal to what is printed, and the third policy reads exactly what the publisher sends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from productos.domain.metrics_ports import ASG_DIMENSION, DB_POOL_UTILIZATION, UNITS
from productos.infra.aws.resources import Deployment, alarms, dashboard, scaling_policies
from productos.settings import settings_from_values
from tests.integration.conftest import REGION, Aws

ASG_NAME = "productos-asg"


@dataclass(frozen=True)
class Stack:
    """An ALB, its target group and an ASG in moto."""

    alb_name: str
    alb_arn: str
    target_group_name: str
    target_group_arn: str
    asg_name: str

    @property
    def alb_suffix(self) -> str:
        return self.alb_arn.split(":loadbalancer/", 1)[1]

    @property
    def target_group_suffix(self) -> str:
        return "targetgroup/" + self.target_group_arn.split(":targetgroup/", 1)[1]


def client(aws: Aws, service: str) -> Any:
    return boto3.client(
        service, region_name=REGION, endpoint_url=aws.endpoint,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


@pytest.fixture
def stack(aws: Aws) -> Stack:
    ec2, elbv2, autoscaling = client(aws, "ec2"), client(aws, "elbv2"), client(aws, "autoscaling")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"][:2]]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=zone)["Subnet"]["SubnetId"]
        for i, zone in enumerate(zones)
    ]
    alb = elbv2.create_load_balancer(Name="productos-alb", Subnets=subnets, Type="application")
    target_group = elbv2.create_target_group(
        Name="productos-tg", Protocol="HTTP", Port=8000, VpcId=vpc, HealthCheckPath="/health"
    )
    image = ec2.describe_images()["Images"][0]["ImageId"]
    ec2.create_launch_template(
        LaunchTemplateName="productos-lt", LaunchTemplateData={"ImageId": image, "InstanceType": "t3.small"}
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=ASG_NAME,
        LaunchTemplate={"LaunchTemplateName": "productos-lt"},
        MinSize=2, MaxSize=10, DesiredCapacity=2, VPCZoneIdentifier=",".join(subnets),
        TargetGroupARNs=[target_group["TargetGroups"][0]["TargetGroupArn"]],
    )  # fmt: skip
    return Stack(
        "productos-alb",
        alb["LoadBalancers"][0]["LoadBalancerArn"],
        "productos-tg",
        target_group["TargetGroups"][0]["TargetGroupArn"],
        ASG_NAME,
    )


def productos_aws(*args: str, env: dict[str, str] | None = None) -> tuple[Any, str]:
    """Run ``productos aws ...`` as a process; its JSON output and its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "productos", "aws", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


COMMON = ("--asg-name", ASG_NAME, "--db-instance", "productos-db", "--api-id", "a1b2c3d4e5")


def test_scaling_policies_apply_and_read_back_equal(aws: Aws, stack: Stack) -> None:
    # The ALB and target group by name: the CLI looks their ARNs up.
    printed, stderr = productos_aws(
        "scaling-policies",
        "--apply",
        *COMMON,
        "--alb",
        stack.alb_name,
        "--target-group",
        stack.target_group_name,
    )
    assert [p["PolicyName"] for p in printed] == [
        "productos-api-cpu-70",
        "productos-api-alb-requests-1000",
        "productos-api-db-pool-80",
    ]
    assert "applied scaling policy productos-api-db-pool-80" in stderr
    stored = {
        p["PolicyName"]: p
        for p in client(aws, "autoscaling").describe_policies(AutoScalingGroupName=ASG_NAME)["ScalingPolicies"]
    }
    assert set(stored) == {p["PolicyName"] for p in printed}
    for policy in printed:
        back = stored[policy["PolicyName"]]
        assert back["AutoScalingGroupName"] == ASG_NAME
        assert back["PolicyType"] == "TargetTrackingScaling"
        assert back["TargetTrackingConfiguration"] == policy["TargetTrackingConfiguration"]
        assert back["EstimatedInstanceWarmup"] == policy["EstimatedInstanceWarmup"]
    labels = [
        p["TargetTrackingConfiguration"]["PredefinedMetricSpecification"].get("ResourceLabel")
        for p in printed
        if "PredefinedMetricSpecification" in p["TargetTrackingConfiguration"]
    ]
    assert f"{stack.alb_suffix}/{stack.target_group_suffix}" in labels

    # Applying again updates in place: still three.
    productos_aws(
        "scaling-policies",
        "--apply",
        *COMMON,
        "--alb",
        stack.alb_arn,
        "--target-group",
        stack.target_group_arn,
    )
    assert len(client(aws, "autoscaling").describe_policies(AutoScalingGroupName=ASG_NAME)["ScalingPolicies"]) == 3


def test_the_pool_policy_reads_what_the_publisher_sends() -> None:
    """Namespace, name, dimensions, statistic and unit: those of the datums ``step_datums`` makes."""
    from productos.observability.publishing import Figures, PoolSample, step_datums

    deployment = Deployment(asg_name=ASG_NAME, namespace="Custom/Productos")
    spec = scaling_policies(deployment)[-1]["TargetTrackingConfiguration"]["CustomizedMetricSpecification"]
    datums = step_datums(
        start=0, interval=60, delta=Figures(), pool=[PoolSample(8, 10)], dropped=0,
        dimension_sets=[((ASG_DIMENSION, ASG_NAME),), ((ASG_DIMENSION, ASG_NAME), ("InstanceId", "i-1"))],
    )  # fmt: skip
    published = [d for d in datums if d.name == DB_POOL_UTILIZATION]
    matching = [d for d in published if [{"Name": k, "Value": v} for k, v in d.dimensions] == spec["Dimensions"]]
    assert len(matching) == 1  # the ASG-wide copy, not the per-instance one
    assert spec["MetricName"] == DB_POOL_UTILIZATION and spec["Unit"] == UNITS[DB_POOL_UTILIZATION] == "Percent"
    assert spec["Namespace"] == "Custom/Productos"
    assert spec["Statistic"] == "Average"  # the mean over the instances' samples: what the target compares


def test_alarms_apply_and_read_back_equal(aws: Aws, stack: Stack) -> None:
    printed, _ = productos_aws(
        "alarms", "--apply", *COMMON, "--alb", stack.alb_suffix, "--target-group", stack.target_group_suffix,
        "--alarm-action", "arn:aws:sns:us-east-1:123456789012:productos-alarms",
    )  # fmt: skip
    assert [a["AlarmName"] for a in printed] == [
        "productos-api-alb-5xx",
        "productos-api-rds-cpu",
        "productos-api-unhealthy-hosts",
        "productos-api-api-4xx-rate",
    ]
    stored = {
        a["AlarmName"]: a
        for a in client(aws, "cloudwatch").describe_alarms(AlarmNames=[a["AlarmName"] for a in printed])["MetricAlarms"]
    }
    assert set(stored) == {a["AlarmName"] for a in printed}
    for alarm in printed:
        back = stored[alarm["AlarmName"]]
        for key, value in alarm.items():
            if key == "Metrics":
                assert [_metric_query(q) for q in back["Metrics"]] == value, key
            else:
                assert back[key] == value, key


def _metric_query(query: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in query.items() if k not in {"AccountId"}}


def test_dashboard_apply_and_read_back_equal(aws: Aws, stack: Stack) -> None:
    printed, _ = productos_aws(
        "dashboard", "--apply", *COMMON, "--alb", stack.alb_name, "--target-group", stack.target_group_name,
        "--region", REGION,
    )  # fmt: skip
    back = client(aws, "cloudwatch").get_dashboard(DashboardName=printed["DashboardName"])
    assert json.loads(back["DashboardBody"]) == printed["DashboardBody"]
    titles = [w["properties"].get("markdown") for w in printed["DashboardBody"]["widgets"] if w["type"] == "text"]
    assert titles == [
        "## API Gateway",
        "## Application Load Balancer",
        "## Auto Scaling group",
        "## RDS",
        "## productos",
    ]
    pool = next(
        w
        for w in printed["DashboardBody"]["widgets"]
        if w["type"] == "metric" and "DB pool" in w["properties"]["title"]
    )
    assert pool["properties"]["metrics"] == [
        ["Productos", "DBPoolUtilization", ASG_DIMENSION, ASG_NAME, {"stat": "Average"}]
    ]


def test_printing_needs_no_aws_and_says_what_was_left_out(tmp_path: Path) -> None:
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "PRODUCTOS_ASG_NAME": ASG_NAME}
    printed, stderr = productos_aws("scaling-policies", env=env)
    assert [p["PolicyName"] for p in printed] == ["productos-api-cpu-70", "productos-api-db-pool-80"]
    assert "--alb and --target-group" in stderr
    printed, stderr = productos_aws("alarms", "--alb", "app/a/1", env=env)
    assert [a["AlarmName"] for a in printed] == ["productos-api-alb-5xx"]
    assert "--db-instance" in stderr and "--api-id" in stderr


def test_the_printed_json_is_what_the_pure_functions_make(aws: Aws, stack: Stack) -> None:
    deployment = Deployment(
        asg_name=ASG_NAME, load_balancer=stack.alb_suffix, target_group=stack.target_group_suffix,
        db_instance="productos-db", api_id="a1b2c3d4e5", region=REGION,
    )  # fmt: skip
    args = (
        *COMMON,
        "--alb",
        stack.alb_suffix,
        "--target-group",
        stack.target_group_suffix,
        "--region",
        REGION,
    )
    assert productos_aws("scaling-policies", *args)[0] == scaling_policies(deployment)
    assert productos_aws("alarms", *args)[0] == alarms(deployment)
    assert productos_aws("dashboard", *args)[0] == dashboard(deployment)


def test_a_missing_asg_name_is_a_configuration_error() -> None:
    env = {**os.environ, "PRODUCTOS_ASG_NAME": ""}
    done = subprocess.run(
        [sys.executable, "-m", "productos", "aws", "scaling-policies"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 3
    assert "--asg-name" in done.stderr


def test_apply_without_credentials_names_the_cause_and_the_fix() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k in {"AWS_ENDPOINT_URL"}}
    env.update(
        AWS_REGION="us-east-1",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_CONFIG_FILE="/nonexistent",
        AWS_EC2_METADATA_DISABLED="true",
    )
    done = subprocess.run(
        [sys.executable, "-m", "productos", "aws", "scaling-policies", "--asg-name", "g", "--apply"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "cannot apply the scaling policies" in done.stderr and "no AWS credentials" in done.stderr
    assert "Traceback" not in done.stderr


def test_alarms_with_a_budget_add_the_rds_connections_alarm(aws: Aws, stack: Stack) -> None:
    printed, stderr = productos_aws("alarms", "--apply", *COMMON, "--connection-budget", "75")
    connections = next(a for a in printed if a["AlarmName"] == "productos-api-rds-connections")
    assert (connections["MetricName"], connections["Threshold"]) == ("DatabaseConnections", 60.0)
    assert "connections alarm" not in stderr
    (back,) = client(aws, "cloudwatch").describe_alarms(AlarmNames=["productos-api-rds-connections"])["MetricAlarms"]
    for key, value in connections.items():
        assert back[key] == value, key
    # DB_CONNECTION_BUDGET serves as the option does.
    printed, _ = productos_aws("alarms", *COMMON, env={"DB_CONNECTION_BUDGET": "75"})
    assert connections in printed


def test_pool_sizes_fit_the_budget_at_the_groups_maximum_and_apply_to_ssm(aws: Aws, stack: Stack) -> None:
    # The ASG's maximum (10) from the Auto Scaling API; 75 // (10 x 2) = 3 per worker.
    printed, stderr = productos_aws(
        "pool-sizes", "--apply", "--asg-name", ASG_NAME, "--connection-budget", "75", "--workers", "2"
    )
    assert [(p["Name"], p["Value"], p["Type"]) for p in printed] == [
        ("/productos-api/db-pool-size", "3", "String"),
        ("/productos-api/db-max-overflow", "0", "String"),
    ]
    assert f"at worst 10 instances x 2 workers x 3 connections = 60 connections (the MaxSize of {ASG_NAME})" in stderr
    stored = {p["Name"]: p["Value"] for p in aws.ssm.get_parameters(Names=[p["Name"] for p in printed])["Parameters"]}
    assert stored == {"/productos-api/db-pool-size": "3", "/productos-api/db-max-overflow": "0"}

    # Printing needs no group when its maximum is given; settings stand in for the options.
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "PRODUCTOS_ASG_MAX_SIZE": "4", "WORKERS": "2",
           "DB_CONNECTION_BUDGET": "1000", "PRODUCTOS_SSM_PATH": "/pedidos/"}  # fmt: skip
    printed, _ = productos_aws("pool-sizes", env=env)
    # 1000 // 8 = 125, capped at the library's default pool (DB_POOL_SIZE + DB_MAX_OVERFLOW).
    defaults = settings_from_values({})
    assert [(p["Name"], p["Value"]) for p in printed] == [
        ("/pedidos/db-pool-size", str(defaults.db_pool_size + defaults.db_max_overflow)),
        ("/pedidos/db-max-overflow", "0"),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--asg-max-size", "10", "--workers", "2"), "no connection budget"),
        (("--asg-max-size", "10", "--connection-budget", "75"), "give --workers or set WORKERS"),
        (("--asg-max-size", "10", "--workers", "2", "--connection-budget", "19"), "cannot give one connection"),
        (("--workers", "2", "--connection-budget", "75"), "no Auto Scaling group"),
    ],
)
def test_pool_sizes_say_what_is_missing(args: tuple[str, ...], message: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRODUCTOS_", "DB_", "WORKERS"))}
    done = subprocess.run(
        [sys.executable, "-m", "productos", "aws", "pool-sizes", *args],
        capture_output=True, text=True, timeout=60, env={**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
