"""Writes deploy/cloudformation.yaml: the guide's whole architecture as one CloudFormation template.

    python deploy/cloudformation.py           # (re)write deploy/cloudformation.yaml
    python deploy/cloudformation.py --check   # exit 1 if the committed template is not this script's output

The template is generated, never edited by hand, so that what it shares with the library has one source:

* the three target-tracking policies, the five alarms and the dashboard are the requests
  ``productos.infra.aws.resources`` builds (what ``productos aws scaling-policies|alarms|dashboard`` prints),
  turned into CloudFormation resources. resources.py is called with stand-in names, and each stand-in is then
  replaced by the intrinsic function that yields the real name when the stack is created;
* the target group's port and deregistration delay, and the ALB's idle timeout, come from the service's
  settings (``APP_PORT``, ``PRODUCTOS_GRACEFUL_TIMEOUT``, ``PRODUCTOS_KEEPALIVE``); its health check must see a
  draining instance go within the drain that deploy/productos.service sets (``PRODUCTOS_DRAIN_SECONDS``), and
  the unit's ``TimeoutStopSec`` must cover the drain and the graceful timeout: the generator refuses otherwise;
* the User Data is deploy/user-data.sh, after a few lines that set its variables from the stack; the unit's
  ``ExecStartPre`` (``productos migrate --wait``), ``TimeoutStartSec`` and start limits must fit the health check
  grace period and stop restarting while the database stays down: the generator refuses otherwise (check_start);
* the edge is closed: an internal ALB that API Gateway reaches through a VPC link, answering /metrics 404 itself
  (METRICS_PATHS and, for percent-encoded spellings, METRICS_PATH_REGEX); RDS Proxy is an option (rds_proxy);
* each worker's pool (the DbPoolSize and DbMaxOverflow defaults) is the largest whose worst case at the ASG's
  maximum fits DB_CONNECTION_BUDGET (``productos.domain.connection_budget``, as ``productos aws pool-sizes``
  and ``productos check`` compute it), and the RDS connections alarm fires at 80 % of that budget.

tests/integration/test_cloudformation.py checks that the committed template is this script's output, lints it
with cfn-lint, and creates it in moto.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from productos.domain.connection_budget import fit_pool_sizes
from productos.domain.metrics_ports import DEFAULT_NAMESPACE
from productos.entrypoints.budget import pool_ceiling
from productos.infra.aws import resources
from productos.settings import Settings

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "cloudformation.yaml"
USER_DATA = HERE / "user-data.sh"

# The target group's health check. The guide's (section 4) checks every 30 s and takes an instance out after 3
# failures: 90 s, which an instance stopped while still registered (systemctl restart, a stop outside an
# instance refresh) would have to keep draining for, on every deploy. Every 5 s and out after 2 failures, a
# draining instance is out within 5 x 2 + 4 = 14 s, inside the unit's 15 s drain.
HEALTH_CHECK_PATH = "/health"
HEALTH_CHECK_INTERVAL = 5
HEALTH_CHECK_TIMEOUT = 4  # the ALB requires less than the interval; /health answers within PRODUCTOS_HEALTH_TIMEOUT
HEALTHY_THRESHOLD = 2
UNHEALTHY_THRESHOLD = 2
HEALTH_CHECK_MATCHER = "200"
#: Seconds after SIGTERM by which every ALB node has seen a draining instance fail its checks, at worst.
DRAIN_DETECTION = HEALTH_CHECK_INTERVAL * UNHEALTHY_THRESHOLD + HEALTH_CHECK_TIMEOUT
#: What systemd leaves the master beyond its own graceful timeout (the drain plus PRODUCTOS_GRACEFUL_TIMEOUT)
#: to kill what is left and exit.
STOP_MARGIN = 5
UNIT = HERE / "productos.service"
ASG_MIN, ASG_MAX, ASG_DESIRED = 2, 10, 2
#: The gunicorn workers of each instance: WORKERS' default, its vCPUs (2 on a t3.small or a t3.medium).
INSTANCE_WORKERS = 2
#: The service's share of the database's connections (DB_CONNECTION_BUDGET) on the default DatabaseInstanceClass.
#: A db.t3.micro's max_connections is LEAST(DBInstanceClassMemory/9531392, 5000): 80 to 110 from its 1 GiB, less
#: what RDS keeps for itself; superuser_reserved_connections (3) and rds.rds_superuser_reserved_connections (2) are
#: not for the service. With a larger class, raise it and run this script again.
DB_CONNECTION_BUDGET = 75
#: Each worker's pool at the ASG's maximum (productos.domain.connection_budget), the parameters' defaults.
POOL_SIZES = fit_pool_sizes(DB_CONNECTION_BUDGET, instances=ASG_MAX, workers=INSTANCE_WORKERS, ceiling=pool_ceiling())
HEALTH_CHECK_GRACE_PERIOD = resources.INSTANCE_WARMUP  # 300 s, also the policies' instance warm-up
#: The ALB's default idle timeout; the service keeps connections open longer (PRODUCTOS_KEEPALIVE).
ALB_IDLE_TIMEOUT = 60
#: RDS (section 7): 20 GB gp3, 7 days of backups.
DB_STORAGE_GB = 20
DB_BACKUP_DAYS = 7
DB_PORT = 5432
LOG_RETENTION_DAYS = 30

VPC_CIDR = "10.0.0.0/16"
PUBLIC_CIDRS = ("10.0.0.0/24", "10.0.1.0/24")
PRIVATE_CIDRS = ("10.0.10.0/24", "10.0.11.0/24")

# The start of an instance: `productos migrate --wait <s>` in the unit's ExecStartPre, then `productos serve`.
#: What an instance needs besides the wait to come up inside the health check grace period (boot, User Data,
#: the migration itself, two healthy checks).
BOOT_ALLOWANCE = 60
#: What TimeoutStartSec leaves the migration itself beyond the wait; a longer one is run by hand before a rollout.
MIGRATION_ALLOWANCE = 60

# The edge: API Gateway is the only way in (an internal ALB behind a VPC link), and /metrics stops at the ALB.
#: The paths the HTTPS listener answers 404 itself, never forwarding them: the Prometheus exposition.
METRICS_PATHS = ("/metrics", "/metrics/*")
#: ... and their percent-encoded spellings, which the ALB compares as they are sent (uvicorn decodes them, so
#: /m%65trics would otherwise reach /metrics): every letter literal or %XX, and a slash or %2F after it.
METRICS_PATH_REGEX = "^/(m|%6[dD])(e|%65)(t|%74)(r|%72)(i|%69)(c|%63)(s|%73)((/|%2[fF]).*)?$"
#: The fixed answer, the body of the service's own 404.
METRICS_NOT_FOUND = '{"detail":"Not Found"}'

# RDS Proxy (EnableRdsProxy): the instances' pools go to the proxy; migrations go straight to the database.
#: The proxy's share of the database's max_connections: the rest is for direct logins (migrations as the owner,
#: `productos check`, operators).
PROXY_MAX_CONNECTIONS_PERCENT = 90
PROXY_MAX_IDLE_CONNECTIONS_PERCENT = 50


def ref(name: str) -> dict[str, Any]:
    return {"Ref": name}


def get_att(resource: str, attribute: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [resource, attribute]}


def sub(text: str) -> dict[str, Any]:
    return {"Fn::Sub": text}


def tags(name: str) -> list[dict[str, Any]]:
    return [{"Key": "Name", "Value": sub(f"${{ServiceName}}-{name}")}]


# --- names known only when the stack is created -----------------------------------------------------------

#: Each stand-in given to resources.py, and the Fn::Sub variable that yields the real value.
LATE_NAMES: dict[str, str] = {
    "LATE0ASG0": "AutoScalingGroup",
    "LATE0NAMESPACE0": "MetricsNamespace",
    "app/LATE0ALB0": "LoadBalancer.LoadBalancerFullName",
    "targetgroup/LATE0TG0": "TargetGroup.TargetGroupFullName",
    "LATE0DB0": "Database",
    "LATE0API0": "HttpApi",
    "LATE0REGION0": "AWS::Region",
    "LATE0PREFIX0": "ServiceName",
    "LATE0TOPIC0": "AlarmTopic",
}
_LATE = re.compile("|".join(re.escape(stand_in) for stand_in in sorted(LATE_NAMES, key=len, reverse=True)))


def deployment() -> resources.Deployment:
    """The ``Deployment`` the template describes, with stand-ins for the names CloudFormation chooses."""
    names = {variable: stand_in for stand_in, variable in LATE_NAMES.items()}
    return resources.Deployment(
        asg_name=names["AutoScalingGroup"],
        namespace=names["MetricsNamespace"],
        load_balancer=names["LoadBalancer.LoadBalancerFullName"],
        target_group=names["TargetGroup.TargetGroupFullName"],
        db_instance=names["Database"],
        api_id=names["HttpApi"],
        region=names["AWS::Region"],
        prefix=names["ServiceName"],
        alarm_actions=(names["AlarmTopic"],),
        connection_budget=DB_CONNECTION_BUDGET,
    )


def late(value: Any) -> Any:
    """``value`` with every stand-in replaced: a whole-string stand-in by ``Ref``/``Fn::GetAtt``, one inside a
    longer string by ``Fn::Sub``."""
    if isinstance(value, dict):
        return {key: late(item) for key, item in value.items()}
    if isinstance(value, list):
        return [late(item) for item in value]
    if not isinstance(value, str) or not _LATE.search(value):
        return value
    if value in LATE_NAMES:
        variable = LATE_NAMES[value]
        if "." in variable:
            return get_att(*variable.split(".", 1))
        return ref(variable)
    if "${" in value:
        raise ValueError(f"a literal ${{ in {value!r} would be read as a Fn::Sub variable")
    return sub(_LATE.sub(lambda match: "${" + LATE_NAMES[match.group(0)] + "}", value))


def logical_id(kind: str, name: str) -> str:
    """``ScalingPolicy`` + ``LATE0PREFIX0-alb-requests-1000`` → ``ScalingPolicyAlbRequests1000``."""
    suffix = name.removeprefix("LATE0PREFIX0-")
    return kind + "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", suffix))


def dashboard_json(body: dict[str, Any]) -> str:
    """The dashboard's JSON with a line per widget: short enough to read in the template, and a change to
    one widget is a change to one line."""
    parts = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in body.items() if key != "widgets"]
    widgets = ",\n".join(f"    {json.dumps(widget)}" for widget in body.get("widgets", []))
    parts.append(f'  "widgets": [\n{widgets}\n  ]')
    return "{\n" + ",\n".join(parts) + "\n}"


def monitoring() -> dict[str, Any]:
    """The scaling policies, alarms and dashboard of ``productos aws``, as CloudFormation resources."""
    target = deployment()
    out: dict[str, Any] = {}
    for request in resources.scaling_policies(target):
        # AWS::AutoScaling::ScalingPolicy has no name property: CloudFormation names the policy after the
        # stack and the logical id. Every other field is PutScalingPolicy's, under the same name.
        properties = {key: value for key, value in request.items() if key != "PolicyName"}
        out[logical_id("ScalingPolicy", request["PolicyName"])] = {
            "Type": "AWS::AutoScaling::ScalingPolicy",
            "Properties": late(properties),
        }
    for request in resources.alarms(target):
        out[logical_id("Alarm", request["AlarmName"])] = {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": late(request),
        }
    board = resources.dashboard(target)
    out["Dashboard"] = {
        "Type": "AWS::CloudWatch::Dashboard",
        "Properties": {
            "DashboardName": late(board["DashboardName"]),
            "DashboardBody": late(dashboard_json(board["DashboardBody"])),
        },
    }
    return out


# --- the rest of the architecture -------------------------------------------------------------------------


def parameters() -> dict[str, Any]:
    return {
        "ServiceName": {
            "Type": "String",
            "Default": "productos-api",
            "AllowedPattern": "^[a-z][a-z0-9-]{1,27}$",
            "Description": "Prefix of names; the SSM path is /<ServiceName>/ and /health reports it",
        },
        "AmiId": {
            "Type": "AWS::EC2::Image::Id",
            "Description": "The AMI built by deploy/packer/productos.pkr.hcl",
        },
        "InstanceType": {"Type": "String", "Default": "t3.small", "Description": "t3.small or t3.medium"},
        "CertificateArn": {
            "Type": "String",
            "AllowedPattern": "^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/.+$",
            "Description": "ACM certificate of the ALB's HTTPS listener; it must cover DomainName",
        },
        "DomainName": {
            "Type": "String",
            "AllowedPattern": "^[a-z0-9.-]+$",
            "Description": "The ALB's name in DNS (API Gateway calls https://<DomainName>)",
        },
        "HostedZoneId": {
            "Type": "String",
            "Default": "",
            "Description": "Route 53 zone of DomainName, for an alias record to the ALB; empty: none is made",
        },
        "DatabaseInstanceClass": {"Type": "String", "Default": "db.t3.micro"},
        "DatabaseEngineVersion": {
            "Type": "String",
            "Default": "16",
            "Description": "PostgreSQL major version",
        },
        "DatabaseName": {
            "Type": "String",
            "Default": "productos",
            "AllowedPattern": "^[a-z][a-z0-9_]{0,62}$",
        },
        "DatabaseUsername": {
            "Type": "String",
            "Default": "productos",
            "AllowedPattern": "^[a-z][a-z0-9_]{0,62}$",
            "Description": "Master user; RDS keeps its password in Secrets Manager and rotates it",
        },
        # Every worker of every instance keeps its own pool: at the ASG's maximum, ASG_MAX instances x WORKERS x
        # (pool + overflow) connections must fit the budget; the defaults are the largest pools that do.
        "DbPoolSize": {
            "Type": "Number",
            "Default": POOL_SIZES.pool_size,
            "MinValue": 1,
            "Description": (
                f"DB_POOL_SIZE of each worker (SSM /<ServiceName>/db-pool-size); {ASG_MAX} instances x "
                f"{INSTANCE_WORKERS} workers x (pool + overflow) must fit {DB_CONNECTION_BUDGET} connections"
            ),
        },
        # A String, as SSM stores it: moto's CloudFormation turns a Number parameter of 0 into no value at all.
        "DbMaxOverflow": {
            "Type": "String",
            "Default": str(POOL_SIZES.max_overflow),
            "AllowedPattern": "^[0-9]{1,4}$",
            "Description": "DB_MAX_OVERFLOW of each worker (SSM /<ServiceName>/db-max-overflow)",
        },
        "MetricsNamespace": {
            "Type": "String",
            "Default": DEFAULT_NAMESPACE,
            "Description": "PRODUCTOS_CLOUDWATCH_NAMESPACE: the DB pool scaling policy reads it",
        },
        "ApiThrottlingRateLimit": {
            "Type": "Number",
            "Default": 100,
            "MinValue": 1,
            "Description": "API Gateway: steady requests per second",
        },
        "ApiThrottlingBurstLimit": {
            "Type": "Number",
            "Default": 200,
            "MinValue": 1,
            "Description": "API Gateway: burst of requests",
        },
        "AlarmEmail": {
            "Type": "String",
            "Default": "",
            "Description": "Subscribed to the alarms' SNS topic; empty: no subscription",
        },
        "EnableSessionManager": {
            "Type": "String",
            "Default": "false",
            "AllowedValues": ["true", "false"],
            "Description": "Attach AmazonSSMManagedInstanceCore to reach instances without SSH",
        },
        "AppDatabaseUsername": {
            "Type": "String",
            "Default": "productos_app",
            "AllowedPattern": "^[a-z][a-z0-9_]{0,62}$",
            "Description": (
                "The service's login, which may only read and write rows; `productos migrate`, as the master user, "
                "creates it with the password the stack generates in Secrets Manager"
            ),
        },
        "EnableRdsProxy": {
            "Type": "String",
            "Default": "false",
            "AllowedValues": ["true", "false"],
            "Description": (
                "true: the instances reach the database through RDS Proxy (DB_POOLER=transaction), when instances x "
                "workers x pool exceed the connections the database allows; migrations still go straight to it"
            ),
        },
        "RdsProxyIamAuth": {
            "Type": "String",
            "Default": "false",
            "AllowedValues": ["true", "false"],
            "Description": (
                "With EnableRdsProxy: the instances log in to the proxy with RDS IAM tokens (DB_IAM_AUTH=true) "
                "instead of the secret's password; the proxy itself always logs in to the database with the secret"
            ),
        },
    }


def conditions() -> dict[str, Any]:
    def given(name: str) -> dict[str, Any]:
        return {"Fn::Not": [{"Fn::Equals": [ref(name), ""]}]}

    return {
        "CreateDnsRecord": given("HostedZoneId"),
        "SubscribeAlarmEmail": given("AlarmEmail"),
        "SessionManager": {"Fn::Equals": [ref("EnableSessionManager"), "true"]},
        "UseRdsProxy": {"Fn::Equals": [ref("EnableRdsProxy"), "true"]},
        "UseRdsProxyIamAuth": {
            "Fn::And": [{"Condition": "UseRdsProxy"}, {"Fn::Equals": [ref("RdsProxyIamAuth"), "true"]}]
        },
    }


def network() -> dict[str, Any]:
    """VPC, two public subnets (ALB, NAT) and two private ones (instances, RDS) in two AZs."""
    out: dict[str, Any] = {
        "Vpc": {
            "Type": "AWS::EC2::VPC",
            "Properties": {
                "CidrBlock": VPC_CIDR,
                "EnableDnsSupport": True,
                "EnableDnsHostnames": True,
                "Tags": tags("vpc"),
            },
        },
        "InternetGateway": {"Type": "AWS::EC2::InternetGateway", "Properties": {"Tags": tags("igw")}},
        "InternetGatewayAttachment": {
            "Type": "AWS::EC2::VPCGatewayAttachment",
            "Properties": {"VpcId": ref("Vpc"), "InternetGatewayId": ref("InternetGateway")},
        },
    }
    for kind, cidrs in (("Public", PUBLIC_CIDRS), ("Private", PRIVATE_CIDRS)):
        for index, cidr in enumerate(cidrs):
            out[f"{kind}Subnet{index + 1}"] = {
                "Type": "AWS::EC2::Subnet",
                "Properties": {
                    "VpcId": ref("Vpc"),
                    "CidrBlock": cidr,
                    "AvailabilityZone": {"Fn::Select": [index, {"Fn::GetAZs": ""}]},
                    "Tags": tags(f"{kind.lower()}-{index + 1}"),
                },
            }
    out["PublicRouteTable"] = {
        "Type": "AWS::EC2::RouteTable",
        "Properties": {"VpcId": ref("Vpc"), "Tags": tags("public")},
    }
    out["PublicDefaultRoute"] = {
        "Type": "AWS::EC2::Route",
        "DependsOn": "InternetGatewayAttachment",
        "Properties": {
            "RouteTableId": ref("PublicRouteTable"),
            "DestinationCidrBlock": "0.0.0.0/0",
            "GatewayId": ref("InternetGateway"),
        },
    }
    # One NAT gateway, as the guide has it: instances reach AWS APIs and package mirrors through it. A second
    # one in the other AZ would survive the loss of an AZ, for another ~$32 a month.
    out["NatAddress"] = {
        "Type": "AWS::EC2::EIP",
        "DependsOn": "InternetGatewayAttachment",
        "Properties": {"Domain": "vpc", "Tags": tags("nat")},
    }
    out["NatGateway"] = {
        "Type": "AWS::EC2::NatGateway",
        "Properties": {
            "AllocationId": get_att("NatAddress", "AllocationId"),
            "SubnetId": ref("PublicSubnet1"),
            "Tags": tags("nat"),
        },
    }
    out["PrivateRouteTable"] = {
        "Type": "AWS::EC2::RouteTable",
        "Properties": {"VpcId": ref("Vpc"), "Tags": tags("private")},
    }
    out["PrivateDefaultRoute"] = {
        "Type": "AWS::EC2::Route",
        "Properties": {
            "RouteTableId": ref("PrivateRouteTable"),
            "DestinationCidrBlock": "0.0.0.0/0",
            "NatGatewayId": ref("NatGateway"),
        },
    }
    for kind in ("Public", "Private"):
        for index in (1, 2):
            out[f"{kind}Subnet{index}Routes"] = {
                "Type": "AWS::EC2::SubnetRouteTableAssociation",
                "Properties": {
                    "SubnetId": ref(f"{kind}Subnet{index}"),
                    "RouteTableId": ref(f"{kind}RouteTable"),
                },
            }
    return out


def ingress(port: int, **source: Any) -> dict[str, Any]:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **source}


def security_groups(app_port: int) -> dict[str, Any]:
    """The guide's network section, with the edge closed: HTTPS to the ALB from API Gateway's VPC link only (the
    ALB is internal: nothing on the Internet reaches it), the app port from the ALB's group only, 5432 from the
    instances' group only (and from RDS Proxy's, with EnableRdsProxy: see rds_proxy)."""
    return {
        "VpcLinkSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "API Gateway VPC link: HTTPS to the ALB only",
                "VpcId": ref("Vpc"),
                # API Gateway's network interfaces only send: no ingress, and egress to the VPC's HTTPS alone.
                "SecurityGroupEgress": [ingress(443, CidrIp=VPC_CIDR, Description="HTTPS, to the ALB")],
                "Tags": tags("vpc-link"),
            },
        },
        "LoadBalancerSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "ALB: HTTPS from the API Gateway VPC link only",
                "VpcId": ref("Vpc"),
                "SecurityGroupIngress": [
                    ingress(
                        443,
                        SourceSecurityGroupId=ref("VpcLinkSecurityGroup"),
                        Description="HTTPS, from API Gateway",
                    ),
                ],
                "Tags": tags("alb"),
            },
        },
        "InstanceSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "Instances: the service port from the ALB only",
                "VpcId": ref("Vpc"),
                "SecurityGroupIngress": [
                    ingress(
                        app_port,
                        SourceSecurityGroupId=ref("LoadBalancerSecurityGroup"),
                        Description="gunicorn, from the ALB",
                    )
                ],
                "Tags": tags("instances"),
            },
        },
        "DatabaseSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "RDS: PostgreSQL from the instances only",
                "VpcId": ref("Vpc"),
                "SecurityGroupIngress": [
                    ingress(
                        DB_PORT,
                        SourceSecurityGroupId=ref("InstanceSecurityGroup"),
                        Description="PostgreSQL, from the instances",
                    )
                ],
                "Tags": tags("database"),
            },
        },
    }


def metrics_rule(priority: int, paths: dict[str, Any]) -> dict[str, Any]:
    """A rule of the HTTPS listener that answers ``paths`` 404, never forwarding them."""
    return {
        "Type": "AWS::ElasticLoadBalancingV2::ListenerRule",
        "Properties": {
            "ListenerArn": ref("HttpsListener"),
            "Priority": priority,
            "Conditions": [{"Field": "path-pattern", "PathPatternConfig": paths}],
            "Actions": [
                {
                    "Type": "fixed-response",
                    "FixedResponseConfig": {
                        "StatusCode": "404",
                        "ContentType": "application/json",
                        "MessageBody": METRICS_NOT_FOUND,
                    },
                }
            ],
        },
    }


def load_balancer(app_port: int, graceful_timeout: int) -> dict[str, Any]:
    return {
        "LoadBalancer": {
            "Type": "AWS::ElasticLoadBalancingV2::LoadBalancer",
            "Properties": {
                "Type": "application",
                # Internal: API Gateway reaches it through its VPC link, and nothing else from outside the VPC does,
                # so no client can go around API Gateway's throttling (deploy/README.md, "The edge").
                "Scheme": "internal",
                "IpAddressType": "ipv4",
                "Subnets": [ref("PrivateSubnet1"), ref("PrivateSubnet2")],
                "SecurityGroups": [ref("LoadBalancerSecurityGroup")],
                "LoadBalancerAttributes": [
                    {"Key": "idle_timeout.timeout_seconds", "Value": str(ALB_IDLE_TIMEOUT)},
                    {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"},
                ],
                "Tags": tags("alb"),
            },
        },
        "TargetGroup": {
            "Type": "AWS::ElasticLoadBalancingV2::TargetGroup",
            "Properties": {
                "VpcId": ref("Vpc"),
                "TargetType": "instance",
                "Protocol": "HTTP",
                "Port": app_port,
                "HealthCheckEnabled": True,
                "HealthCheckProtocol": "HTTP",
                "HealthCheckPort": "traffic-port",
                "HealthCheckPath": HEALTH_CHECK_PATH,
                "HealthCheckIntervalSeconds": HEALTH_CHECK_INTERVAL,
                "HealthCheckTimeoutSeconds": HEALTH_CHECK_TIMEOUT,
                "HealthyThresholdCount": HEALTHY_THRESHOLD,
                "UnhealthyThresholdCount": UNHEALTHY_THRESHOLD,
                "Matcher": {"HttpCode": HEALTH_CHECK_MATCHER},
                "TargetGroupAttributes": [
                    # The Auto Scaling group deregisters an instance and waits this long (or until it has no
                    # connection left) before it terminates it: long enough for any request in flight to finish
                    # (PRODUCTOS_GRACEFUL_TIMEOUT). SIGTERM, from the instance's shutdown, comes after.
                    {"Key": "deregistration_delay.timeout_seconds", "Value": str(graceful_timeout)},
                ],
                "Tags": tags("tg"),
            },
        },
        # HTTPS only: API Gateway's private integration calls this listener, and nothing else can reach the ALB.
        "HttpsListener": {
            "Type": "AWS::ElasticLoadBalancingV2::Listener",
            "Properties": {
                "LoadBalancerArn": ref("LoadBalancer"),
                "Protocol": "HTTPS",
                "Port": 443,
                "SslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
                "Certificates": [{"CertificateArn": ref("CertificateArn")}],
                "DefaultActions": [{"Type": "forward", "TargetGroupArn": ref("TargetGroup")}],
            },
        },
        # /metrics (routes, pool figures, internals) is for scrapers inside the VPC, which call an instance's
        # port: the listener answers it 404 itself, as the service answers a path it does not serve.
        "MetricsNotFoundRule": metrics_rule(1, {"Values": list(METRICS_PATHS)}),
        "MetricsEncodedNotFoundRule": metrics_rule(2, {"RegexValues": [METRICS_PATH_REGEX]}),
        "DnsRecord": {
            "Type": "AWS::Route53::RecordSet",
            "Condition": "CreateDnsRecord",
            "Properties": {
                "HostedZoneId": ref("HostedZoneId"),
                "Name": ref("DomainName"),
                "Type": "A",
                "AliasTarget": {
                    "DNSName": get_att("LoadBalancer", "DNSName"),
                    "HostedZoneId": get_att("LoadBalancer", "CanonicalHostedZoneID"),
                    "EvaluateTargetHealth": True,
                },
            },
        },
    }


#: For the log groups: they have fixed names, so one kept after the stack is gone would stop a new stack
#: from being created; their retention (30 days) is what keeps logs.
DELETE_WITH_THE_STACK = {"DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete"}


def instance_role() -> dict[str, Any]:
    """docs/configuration.md's least-privilege policy (the SSM path and the two logins' secrets, all with AWS
    managed KMS keys, so no kms:Decrypt; with RdsProxyIamAuth, rds-db:connect to the proxy as the service's login
    alone), plus the metrics publisher and the CloudWatch agent."""
    arn = "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/${ServiceName}"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadSettingsUnderThePath",
                "Effect": "Allow",
                "Action": "ssm:GetParametersByPath",
                "Resource": [sub(arn), sub(arn + "/*")],
            },
            {
                # The service's row-only login (PRODUCTOS_SECRET_ID) and the master user's, for `productos migrate`
                # (PRODUCTOS_MIGRATE_SECRET_ID).
                "Sid": "ReadTheTwoLogins",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": [ref("AppDatabaseSecret"), get_att("Database", "MasterUserSecret.SecretArn")],
            },
            {
                "Fn::If": [
                    "UseRdsProxyIamAuth",
                    {
                        "Sid": "LogInToTheProxyAsTheServicesLogin",
                        "Effect": "Allow",
                        "Action": "rds-db:connect",
                        "Resource": {
                            "Fn::Sub": [
                                "arn:${AWS::Partition}:rds-db:${AWS::Region}:${AWS::AccountId}:dbuser:${ProxyId}/"
                                "${AppDatabaseUsername}",
                                # The proxy's resource id (prx-...) is the last part of its ARN.
                                {
                                    "ProxyId": {
                                        "Fn::Select": [6, {"Fn::Split": [":", get_att("DatabaseProxy", "DBProxyArn")]}]
                                    }
                                },
                            ]
                        },
                    },
                    ref("AWS::NoValue"),
                ]
            },
            {
                # PutMetricData has no resource; the namespace condition is what narrows it.
                "Sid": "PublishTheServiceMetrics",
                "Effect": "Allow",
                "Action": "cloudwatch:PutMetricData",
                "Resource": "*",
                "Condition": {"StringEquals": {"cloudwatch:namespace": ref("MetricsNamespace")}},
            },
            {
                "Sid": "ShipTheServiceLog",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                "Resource": get_att("AppLogGroup", "Arn"),
            },
        ],
    }
    return {
        "InstanceRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "ec2.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                },
                "ManagedPolicyArns": {
                    "Fn::If": [
                        "SessionManager",
                        [sub("arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore")],
                        ref("AWS::NoValue"),
                    ]
                },
                "Policies": [{"PolicyName": "productos-instance", "PolicyDocument": policy}],
                "Tags": tags("instance"),
            },
        },
        "InstanceProfile": {
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": {"Roles": [ref("InstanceRole")]},
        },
        "AppLogGroup": {
            "Type": "AWS::Logs::LogGroup",
            **DELETE_WITH_THE_STACK,
            "Properties": {"LogGroupName": sub("/${ServiceName}/app"), "RetentionInDays": LOG_RETENTION_DAYS},
        },
    }


#: Set before deploy/user-data.sh: where the settings are, and what the CloudWatch agent ships where.
USER_DATA_HEADER = """\
#!/bin/bash
# Set by CloudFormation (stack ${AWS::StackName}); what follows is deploy/user-data.sh.
AWS_REGION='${AWS::Region}'
SERVICE_NAME='${ServiceName}'
SSM_PATH='/${ServiceName}/'
SECRET_ID='${AppDatabaseSecret}'
MIGRATE_SECRET_ID='${Database.MasterUserSecret.SecretArn}'
METRICS_NAMESPACE='${MetricsNamespace}'
LOG_GROUP='${AppLogGroup}'
"""


def user_data() -> dict[str, Any]:
    script = USER_DATA.read_text()
    shebang, _, body = script.partition("\n")
    if shebang != "#!/bin/bash":
        raise ValueError(f"{USER_DATA} must start with #!/bin/bash")
    if "${" in body:
        raise ValueError(f"{USER_DATA}: write $NAME, not ${{NAME}}: cfn-lint reads ${{...}} as Fn::Sub (E1029)")
    # One Fn::Sub: the script has no variable of its own in Fn::Sub's syntax, so only the header's are read.
    return {"Fn::Base64": sub(USER_DATA_HEADER + body)}


def instances() -> dict[str, Any]:
    return {
        "LaunchTemplate": {
            "Type": "AWS::EC2::LaunchTemplate",
            "Properties": {
                "LaunchTemplateName": sub("${ServiceName}-lt"),
                "LaunchTemplateData": {
                    "ImageId": ref("AmiId"),
                    "InstanceType": ref("InstanceType"),
                    "IamInstanceProfile": {"Arn": get_att("InstanceProfile", "Arn")},
                    "SecurityGroupIds": [ref("InstanceSecurityGroup")],
                    "MetadataOptions": {
                        "HttpEndpoint": "enabled",
                        "HttpTokens": "required",
                        # The service runs on the host: the token's answer need not cross a container hop.
                        "HttpPutResponseHopLimit": 1,
                        # productos reads the aws:autoscaling:groupName tag from the metadata service.
                        "InstanceMetadataTags": "enabled",
                    },
                    # One-minute CPU figures for the CPU policy.
                    "Monitoring": {"Enabled": True},
                    "UserData": user_data(),
                    "TagSpecifications": [
                        {"ResourceType": "instance", "Tags": tags("instance")},
                        {"ResourceType": "volume", "Tags": tags("instance")},
                    ],
                },
            },
        },
        "AutoScalingGroup": {
            "Type": "AWS::AutoScaling::AutoScalingGroup",
            "Properties": {
                "AutoScalingGroupName": sub("${ServiceName}-asg"),
                "LaunchTemplate": {
                    "LaunchTemplateId": ref("LaunchTemplate"),
                    "Version": get_att("LaunchTemplate", "LatestVersionNumber"),
                },
                "MinSize": str(ASG_MIN),
                "MaxSize": str(ASG_MAX),
                "DesiredCapacity": str(ASG_DESIRED),
                "VPCZoneIdentifier": [ref("PrivateSubnet1"), ref("PrivateSubnet2")],
                "TargetGroupARNs": [ref("TargetGroup")],
                "HealthCheckType": "ELB",
                "HealthCheckGracePeriod": HEALTH_CHECK_GRACE_PERIOD,
                # GroupDesiredCapacity and GroupInServiceInstances, on the dashboard.
                "MetricsCollection": [{"Granularity": "1Minute"}],
            },
        },
    }


def database_url(host: Any, port: Any) -> dict[str, Any]:
    """A database URL without credentials, from the stack. A variable map rather than ${Database.Endpoint.Address}:
    moto's Fn::Sub reads only the first part of a dotted attribute name, and the tests create this stack in moto."""
    return {
        "Fn::Sub": [
            "postgresql://${Host}:${Port}/${DatabaseName}?sslmode=require",
            {"Host": host, "Port": port},
        ]
    }


def database() -> dict[str, Any]:
    return {
        "DatabaseSubnetGroup": {
            "Type": "AWS::RDS::DBSubnetGroup",
            "Properties": {
                "DBSubnetGroupDescription": "Private subnets of the products database",
                "SubnetIds": [ref("PrivateSubnet1"), ref("PrivateSubnet2")],
            },
        },
        "Database": {
            "Type": "AWS::RDS::DBInstance",
            "DeletionPolicy": "Snapshot",
            "UpdateReplacePolicy": "Snapshot",
            "Properties": {
                "Engine": "postgres",
                "EngineVersion": ref("DatabaseEngineVersion"),
                "DBInstanceClass": ref("DatabaseInstanceClass"),
                "AllocatedStorage": str(DB_STORAGE_GB),
                "StorageType": "gp3",
                "StorageEncrypted": True,
                "MultiAZ": True,
                "BackupRetentionPeriod": DB_BACKUP_DAYS,
                "DBName": ref("DatabaseName"),
                "Port": str(DB_PORT),
                "MasterUsername": ref("DatabaseUsername"),
                # RDS makes the password, keeps it in Secrets Manager (rds!db-...) and rotates it; productos
                # reads the secret (PRODUCTOS_SECRET_ID) and follows the rotation without a restart.
                "ManageMasterUserPassword": True,
                "DBSubnetGroupName": ref("DatabaseSubnetGroup"),
                "VPCSecurityGroups": [ref("DatabaseSecurityGroup")],
                "PubliclyAccessible": False,
                "AutoMinorVersionUpgrade": True,
                "CopyTagsToSnapshot": True,
                "Tags": tags("db"),
            },
        },
        # The service's login: a role `productos migrate` (as the master user) makes and limits to reading and
        # writing rows (DB_APP_ROLE=auto), with the password generated here. Not rotated by the stack: a rotation
        # function (the alternating or single user one of AWS) may be added; productos follows a rotated password
        # without a restart, and the next migration sets the database's password again if it was ever replaced.
        "AppDatabaseSecret": {
            "Type": "AWS::SecretsManager::Secret",
            # Deleted with the stack (after Secrets Manager's recovery window): a database restored from the
            # snapshot gets the new stack's password at its first migration.
            **DELETE_WITH_THE_STACK,
            "Properties": {
                "Description": sub("${ServiceName}: the service's row-only database login (PRODUCTOS_SECRET_ID)"),
                "GenerateSecretString": {
                    "SecretStringTemplate": sub('{"username": "${AppDatabaseUsername}"}'),
                    "GenerateStringKey": "password",
                    "PasswordLength": 32,
                    "ExcludePunctuation": True,
                },
                "Tags": tags("app-login"),
            },
        },
        # The URLs without a password: the secrets' usernames and passwords complete them (docs/configuration.md).
        # Strings, not SecureStrings (CloudFormation cannot make those), since they hold no secret. The service's
        # goes to RDS Proxy when there is one; the owner's, for migrations, always straight to the database.
        "DatabaseUrlParameter": {
            "Type": "AWS::SSM::Parameter",
            "Properties": {
                "Name": sub("/${ServiceName}/database-url"),
                "Type": "String",
                "Value": database_url(
                    {
                        "Fn::If": [
                            "UseRdsProxy",
                            get_att("DatabaseProxy", "Endpoint"),
                            get_att("Database", "Endpoint.Address"),
                        ]
                    },
                    {"Fn::If": ["UseRdsProxy", str(DB_PORT), get_att("Database", "Endpoint.Port")]},
                ),
                "Description": "DATABASE_URL without credentials (they come from PRODUCTOS_SECRET_ID)",
            },
        },
        "DatabaseMigrateUrlParameter": {
            "Type": "AWS::SSM::Parameter",
            "Properties": {
                "Name": sub("/${ServiceName}/database-migrate-url"),
                "Type": "String",
                "Value": database_url(get_att("Database", "Endpoint.Address"), get_att("Database", "Endpoint.Port")),
                "Description": "DATABASE_MIGRATE_URL without credentials (they come from PRODUCTOS_MIGRATE_SECRET_ID)",
            },
        },
        # Behind RDS Proxy: transaction pooling (README, "Behind a connection pooler").
        "DbPoolerParameter": {
            "Type": "AWS::SSM::Parameter",
            "Condition": "UseRdsProxy",
            "Properties": {
                "Name": sub("/${ServiceName}/db-pooler"),
                "Type": "String",
                "Value": "transaction",
                "Description": "DB_POOLER",
            },
        },
        "DbIamAuthParameter": {
            "Type": "AWS::SSM::Parameter",
            "Condition": "UseRdsProxyIamAuth",
            "Properties": {
                "Name": sub("/${ServiceName}/db-iam-auth"),
                "Type": "String",
                "Value": "true",
                "Description": "DB_IAM_AUTH",
            },
        },
        **{
            f"{name}Parameter": {
                "Type": "AWS::SSM::Parameter",
                "Properties": {
                    "Name": sub(f"/${{ServiceName}}/{setting}"),
                    "Type": "String",
                    "Value": value,
                    "Description": setting.upper().replace("-", "_"),
                },
            }
            for name, setting, value in (
                ("DbPoolSize", "db-pool-size", ref("DbPoolSize")),
                ("DbMaxOverflow", "db-max-overflow", ref("DbMaxOverflow")),
                # What `productos check` on an instance weighs the pools against.
                ("DbConnectionBudget", "db-connection-budget", str(DB_CONNECTION_BUDGET)),
                ("AsgMaxSize", "productos-asg-max-size", str(ASG_MAX)),
            )
        },
    }


def rds_proxy() -> dict[str, Any]:
    """RDS Proxy, with EnableRdsProxy: the service's pools go to it (the database-url parameter and DB_POOLER=
    transaction, in database()), and it logs in to the database as the service's login, with its secret. The
    instances reach it on 5432 and it reaches the database; migrations still log in straight to the database."""
    when = {"Condition": "UseRdsProxy"}
    statement_timeout = float(Settings.model_fields["db_statement_timeout"].default)
    return {
        "DatabaseProxyRole": {
            "Type": "AWS::IAM::Role",
            **when,
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "rds.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                },
                # The service's login only (an AWS managed KMS key: no kms:Decrypt).
                "Policies": [
                    {
                        "PolicyName": "productos-proxy",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Sid": "ReadTheServicesLogin",
                                    "Effect": "Allow",
                                    "Action": "secretsmanager:GetSecretValue",
                                    "Resource": ref("AppDatabaseSecret"),
                                }
                            ],
                        },
                    }
                ],
                "Tags": tags("proxy"),
            },
        },
        "DatabaseProxySecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            **when,
            "Properties": {
                "GroupDescription": "RDS Proxy: PostgreSQL from the instances only",
                "VpcId": ref("Vpc"),
                "SecurityGroupIngress": [
                    ingress(
                        DB_PORT,
                        SourceSecurityGroupId=ref("InstanceSecurityGroup"),
                        Description="PostgreSQL, from the instances",
                    )
                ],
                "Tags": tags("proxy"),
            },
        },
        "DatabaseFromProxyIngress": {
            "Type": "AWS::EC2::SecurityGroupIngress",
            **when,
            "Properties": {
                "GroupId": ref("DatabaseSecurityGroup"),
                **ingress(
                    DB_PORT,
                    SourceSecurityGroupId=ref("DatabaseProxySecurityGroup"),
                    Description="PostgreSQL, from RDS Proxy",
                ),
            },
        },
        "DatabaseProxy": {
            "Type": "AWS::RDS::DBProxy",
            **when,
            "Properties": {
                "DBProxyName": sub("${ServiceName}-proxy"),
                "EngineFamily": "POSTGRESQL",
                "Auth": [
                    {
                        "Description": "The service's row-only login",
                        "AuthScheme": "SECRETS",
                        "SecretArn": ref("AppDatabaseSecret"),
                        "IAMAuth": {"Fn::If": ["UseRdsProxyIamAuth", "REQUIRED", "DISABLED"]},
                        "ClientPasswordAuthType": "POSTGRES_SCRAM_SHA_256",
                    }
                ],
                "RoleArn": get_att("DatabaseProxyRole", "Arn"),
                "VpcSubnetIds": [ref("PrivateSubnet1"), ref("PrivateSubnet2")],
                "VpcSecurityGroupIds": [ref("DatabaseProxySecurityGroup")],
                "RequireTLS": True,
                "DebugLogging": False,
                "Tags": tags("proxy"),
            },
        },
        "DatabaseProxyTargetGroup": {
            "Type": "AWS::RDS::DBProxyTargetGroup",
            **when,
            "Properties": {
                "DBProxyName": ref("DatabaseProxy"),
                "TargetGroupName": "default",
                "DBInstanceIdentifiers": [ref("Database")],
                "ConnectionPoolConfigurationInfo": {
                    "MaxConnectionsPercent": PROXY_MAX_CONNECTIONS_PERCENT,
                    "MaxIdleConnectionsPercent": PROXY_MAX_IDLE_CONNECTIONS_PERCENT,
                    # A transaction waits this long for a database connection at most: the service's own bound on
                    # a statement (DB_STATEMENT_TIMEOUT), past which it has answered 503 anyway.
                    "ConnectionBorrowTimeout": int(statement_timeout),
                    # productos sets its limits with SET LOCAL, inside each transaction (DB_POOLER=transaction):
                    # nothing that needs the session pinned to one database connection.
                    "SessionPinningFilters": ["EXCLUDE_VARIABLE_SETS"],
                },
            },
        },
    }


def api_gateway() -> dict[str, Any]:
    """The guide's option A: an HTTP API whose $default route proxies every path to the ALB's HTTPS listener,
    throttled at its stage, with access logs; a private integration, through a VPC link, since the ALB is internal.
    TLS all the way: API Gateway checks the ALB's certificate for DomainName."""
    access_log = {
        "requestId": "$context.requestId",
        "ip": "$context.identity.sourceIp",
        "requestTime": "$context.requestTime",
        "httpMethod": "$context.httpMethod",
        "path": "$context.path",
        "status": "$context.status",
        "responseLatency": "$context.responseLatency",
        "integrationLatency": "$context.integrationLatency",
        "integrationError": "$context.integrationErrorMessage",
    }
    return {
        "HttpApi": {
            "Type": "AWS::ApiGatewayV2::Api",
            "Properties": {
                "Name": ref("ServiceName"),
                "ProtocolType": "HTTP",
                "Description": "Proxy to the ALB",
            },
        },
        "VpcLink": {
            "Type": "AWS::ApiGatewayV2::VpcLink",
            "Properties": {
                "Name": sub("${ServiceName}-alb"),
                "SubnetIds": [ref("PrivateSubnet1"), ref("PrivateSubnet2")],
                "SecurityGroupIds": [ref("VpcLinkSecurityGroup")],
            },
        },
        "HttpApiIntegration": {
            "Type": "AWS::ApiGatewayV2::Integration",
            "Properties": {
                "ApiId": ref("HttpApi"),
                "IntegrationType": "HTTP_PROXY",
                "IntegrationMethod": "ANY",
                # A private integration: the ALB's HTTPS listener, through the VPC link. The $default route (of the
                # $default stage: no stage in the path) sends the whole request path on.
                "ConnectionType": "VPC_LINK",
                "ConnectionId": ref("VpcLink"),
                "IntegrationUri": ref("HttpsListener"),
                "TlsConfig": {"ServerNameToVerify": ref("DomainName")},
                "PayloadFormatVersion": "1.0",
            },
        },
        "HttpApiRoute": {
            "Type": "AWS::ApiGatewayV2::Route",
            "Properties": {
                "ApiId": ref("HttpApi"),
                "RouteKey": "$default",
                "Target": sub("integrations/${HttpApiIntegration}"),
            },
        },
        "HttpApiStage": {
            "Type": "AWS::ApiGatewayV2::Stage",
            "Properties": {
                "ApiId": ref("HttpApi"),
                "StageName": "$default",
                "AutoDeploy": True,
                "DefaultRouteSettings": {
                    "ThrottlingRateLimit": ref("ApiThrottlingRateLimit"),
                    "ThrottlingBurstLimit": ref("ApiThrottlingBurstLimit"),
                },
                "AccessLogSettings": {
                    "DestinationArn": get_att("ApiAccessLogGroup", "Arn"),
                    "Format": json.dumps(access_log),
                },
            },
        },
        "ApiAccessLogGroup": {
            "Type": "AWS::Logs::LogGroup",
            **DELETE_WITH_THE_STACK,
            "Properties": {
                "LogGroupName": sub("/${ServiceName}/api-gateway"),
                "RetentionInDays": LOG_RETENTION_DAYS,
            },
        },
    }


def alarm_topic() -> dict[str, Any]:
    return {
        "AlarmTopic": {
            "Type": "AWS::SNS::Topic",
            "Properties": {"DisplayName": sub("${ServiceName} alarms")},
        },
        "AlarmEmailSubscription": {
            "Type": "AWS::SNS::Subscription",
            "Condition": "SubscribeAlarmEmail",
            "Properties": {"TopicArn": ref("AlarmTopic"), "Protocol": "email", "Endpoint": ref("AlarmEmail")},
        },
    }


def outputs() -> dict[str, Any]:
    def output(value: Any, description: str) -> dict[str, Any]:
        return {"Description": description, "Value": value}

    return {
        "ApiEndpoint": output(get_att("HttpApi", "ApiEndpoint"), "API Gateway: the service's public URL"),
        "LoadBalancerDnsName": output(
            get_att("LoadBalancer", "DNSName"), "The internal ALB, reachable from inside the VPC only"
        ),
        "AutoScalingGroupName": output(ref("AutoScalingGroup"), "For instance refreshes"),
        "LaunchTemplateId": output(ref("LaunchTemplate"), "The instances' launch template"),
        "TargetGroupArn": output(ref("TargetGroup"), "The ASG's target group"),
        "DatabaseEndpoint": output(get_att("Database", "Endpoint.Address"), "RDS PostgreSQL"),
        "DatabaseSecretArn": output(
            get_att("Database", "MasterUserSecret.SecretArn"),
            "The master user's secret, the schema owner's login for migrations (PRODUCTOS_MIGRATE_SECRET_ID)",
        ),
        "AppDatabaseSecretArn": output(ref("AppDatabaseSecret"), "The service's row-only login (PRODUCTOS_SECRET_ID)"),
        "DatabaseProxyEndpoint": {
            **output(get_att("DatabaseProxy", "Endpoint"), "RDS Proxy, where DATABASE_URL leads (EnableRdsProxy)"),
            "Condition": "UseRdsProxy",
        },
        "SsmPath": output(sub("/${ServiceName}/"), "PRODUCTOS_SSM_PATH"),
        "Dashboard": output(
            sub("https://console.aws.amazon.com/cloudwatch/home?region=${AWS::Region}#dashboards:name=${Dashboard}"),
            "The CloudWatch dashboard",
        ),
    }


def unit_setting(pattern: str) -> int:
    """An integer the systemd unit sets (``TimeoutStopSec``, ``PRODUCTOS_DRAIN_SECONDS``)."""
    found = re.search(rf"^{pattern}=(\d+)$", UNIT.read_text(), re.M)
    if found is None:
        raise ValueError(f"{UNIT.name} sets no {pattern}")
    return int(found.group(1))


def check_stop_timeouts(graceful_timeout: int) -> None:
    """The stop of an instance, from the ALB's health check to systemd's SIGKILL, fits together."""
    drain = unit_setting("Environment=PRODUCTOS_DRAIN_SECONDS")
    stop = unit_setting("TimeoutStopSec")
    health_timeout = float(Settings.model_fields["health_timeout"].default)
    if HEALTH_CHECK_TIMEOUT >= HEALTH_CHECK_INTERVAL or health_timeout >= HEALTH_CHECK_TIMEOUT:
        raise ValueError("the check's timeout must be below its interval, and above PRODUCTOS_HEALTH_TIMEOUT")
    if drain < DRAIN_DETECTION:
        raise ValueError(f"the unit's drain ({drain} s) ends before the ALB sees the instance go ({DRAIN_DETECTION} s)")
    if stop < drain + graceful_timeout + STOP_MARGIN:
        raise ValueError(
            f"TimeoutStopSec ({stop}) must cover the drain ({drain}), PRODUCTOS_GRACEFUL_TIMEOUT ({graceful_timeout}) "
            f"and {STOP_MARGIN} s for the master to exit"
        )


def unit_lines(section: str) -> list[str]:
    """The lines of one section (``Unit``, ``Service``) of the systemd unit, comments and blanks left out."""
    lines: list[str] = []
    current = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section and line and not line.startswith("#"):
            lines.append(line)
    return lines


def check_start(grace_period: int) -> int:
    """The start of an instance fits together: ``productos migrate --wait`` neither hides a failure nor outlasts
    the health check grace period, systemd gives it the time it needs, and a database that stays down ends in a
    failed unit rather than in restarts for ever. Returns the wait."""
    service = unit_lines("Service")
    pre = [line.partition("=")[2] for line in service if line.startswith("ExecStartPre=")]
    # An absolute path first: systemd's prefixes ('-' ignores a failure) would come before it.
    found = [re.fullmatch(r"(/\S+/productos) migrate --wait (\d+)", command) for command in pre]
    if len(found) != 1 or found[0] is None:
        raise ValueError(f"{UNIT.name}: one ExecStartPre=/.../productos migrate --wait SECONDS, without '-' ({pre})")
    wait = int(found[0].group(2))
    if wait + BOOT_ALLOWANCE > grace_period:
        raise ValueError(
            f"the migration's wait ({wait} s) + {BOOT_ALLOWANCE} s outlasts the grace period ({grace_period} s)"
        )
    if unit_setting("TimeoutStartSec") < wait + MIGRATION_ALLOWANCE:
        raise ValueError(f"TimeoutStartSec must cover the migration's wait ({wait} s) and {MIGRATION_ALLOWANCE} s more")
    # systemd reads the start limits in [Unit] only (in [Service], StartLimitIntervalSec is ignored).
    limits = {line.partition("=")[0] for line in unit_lines("Unit")}
    if not {"StartLimitIntervalSec", "StartLimitBurst"} <= limits:
        raise ValueError(f"{UNIT.name}: StartLimitIntervalSec and StartLimitBurst belong in [Unit]")
    burst, interval = unit_setting("StartLimitBurst"), unit_setting("StartLimitIntervalSec")
    if burst * (wait + unit_setting("RestartSec")) >= interval:
        raise ValueError(
            f"{burst} starts of {wait} s each fit in StartLimitIntervalSec ({interval} s) only if it is longer: "
            "a database that stays down would restart the unit for ever"
        )
    return wait


def template() -> dict[str, Any]:
    settings = Settings.model_fields
    app_port = int(settings["app_port"].default)
    graceful_timeout = int(settings["graceful_timeout"].default)
    keepalive = int(settings["keepalive"].default)
    if keepalive <= ALB_IDLE_TIMEOUT:
        raise ValueError(f"PRODUCTOS_KEEPALIVE ({keepalive}) must exceed the ALB's idle timeout ({ALB_IDLE_TIMEOUT})")
    check_stop_timeouts(graceful_timeout)
    check_start(HEALTH_CHECK_GRACE_PERIOD)
    parts: list[Callable[[], dict[str, Any]]] = [
        network,
        lambda: security_groups(app_port),
        lambda: load_balancer(app_port, graceful_timeout),
        instance_role,
        instances,
        database,
        rds_proxy,
        api_gateway,
        alarm_topic,
        monitoring,
    ]
    resources_: dict[str, Any] = {}
    for part in parts:
        made = part()
        if clash := resources_.keys() & made.keys():
            raise ValueError(f"logical ids made twice: {sorted(clash)}")
        resources_.update(made)
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": (
            "productos: API Gateway, ALB, Auto Scaling group, RDS PostgreSQL (Multi-AZ) in a VPC of two AZs. "
            "Generated by deploy/cloudformation.py; do not edit."
        ),
        "Parameters": parameters(),
        "Conditions": conditions(),
        "Resources": resources_,
        "Outputs": outputs(),
    }


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings (User Data, the dashboard) as literal blocks."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render(document: dict[str, Any] | None = None) -> str:
    body = yaml.dump(
        template() if document is None else document,
        Dumper=_Dumper,
        sort_keys=False,
        width=120,
        allow_unicode=False,
    )
    return f"# Generated by deploy/cloudformation.py from productos; do not edit: run it again.\n{body}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed template is stale")
    parser.add_argument("--output", type=Path, default=TEMPLATE)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        committed = args.output.read_text() if args.output.exists() else ""
        if committed != text:
            sys.stdout.writelines(
                difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    str(args.output),
                    "generated",
                )
            )
            print(f"{args.output} is stale: run python deploy/cloudformation.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
