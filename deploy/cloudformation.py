"""Writes deploy/cloudformation.yaml: the guide's whole architecture as one CloudFormation template.

    python deploy/cloudformation.py           # (re)write deploy/cloudformation.yaml
    python deploy/cloudformation.py --check   # exit 1 if the committed template is not this script's output

The template is generated, never edited by hand, so that what it shares with the library has one source:

* the three target-tracking policies, the four alarms and the dashboard are the requests
  ``productos.infra.aws.resources`` builds (what ``productos aws scaling-policies|alarms|dashboard`` prints),
  turned into CloudFormation resources. resources.py is called with stand-in names, and each stand-in is then
  replaced by the intrinsic function that yields the real name when the stack is created;
* the target group's port and deregistration delay, and the ALB's idle timeout, come from the service's
  settings (``APP_PORT``, ``PRODUCTOS_GRACEFUL_TIMEOUT``, ``PRODUCTOS_KEEPALIVE``); its health check must see a
  draining instance go within the drain that deploy/productos.service sets (``PRODUCTOS_DRAIN_SECONDS``), and
  the unit's ``TimeoutStopSec`` must cover the drain and the graceful timeout: the generator refuses otherwise;
* the User Data is deploy/user-data.sh, after a few lines that set its variables from the stack.

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

from productos.domain.metrics_ports import DEFAULT_NAMESPACE
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
        # Every worker of every instance keeps its own pool: at the ASG's maximum, 10 instances x WORKERS
        # (the vCPUs: 2 on a t3.small) x (pool + overflow) connections must fit RDS's max_connections (about
        # 100 on a db.t3.micro). The library's defaults (10 + 20, the guide's) suit one instance, not ten.
        "DbPoolSize": {
            "Type": "Number",
            "Default": 2,
            "MinValue": 1,
            "Description": "DB_POOL_SIZE of each worker (SSM /<ServiceName>/db-pool-size)",
        },
        "DbMaxOverflow": {
            "Type": "Number",
            "Default": 2,
            "MinValue": 0,
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
    }


def conditions() -> dict[str, Any]:
    def given(name: str) -> dict[str, Any]:
        return {"Fn::Not": [{"Fn::Equals": [ref(name), ""]}]}

    return {
        "CreateDnsRecord": given("HostedZoneId"),
        "SubscribeAlarmEmail": given("AlarmEmail"),
        "SessionManager": {"Fn::Equals": [ref("EnableSessionManager"), "true"]},
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


def security_groups(app_port: int) -> dict[str, Any]:
    """The guide's network section: 80/443 from the Internet to the ALB, the app port from the ALB's group
    only, 5432 from the instances' group only."""

    def ingress(port: int, **source: Any) -> dict[str, Any]:
        return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **source}

    return {
        "LoadBalancerSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "ALB: HTTP and HTTPS from the Internet",
                "VpcId": ref("Vpc"),
                "SecurityGroupIngress": [
                    ingress(80, CidrIp="0.0.0.0/0", Description="HTTP, redirected to HTTPS"),
                    ingress(443, CidrIp="0.0.0.0/0", Description="HTTPS"),
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


def load_balancer(app_port: int, graceful_timeout: int) -> dict[str, Any]:
    return {
        "LoadBalancer": {
            "Type": "AWS::ElasticLoadBalancingV2::LoadBalancer",
            "Properties": {
                "Type": "application",
                "Scheme": "internet-facing",
                "IpAddressType": "ipv4",
                "Subnets": [ref("PublicSubnet1"), ref("PublicSubnet2")],
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
        "HttpListener": {
            "Type": "AWS::ElasticLoadBalancingV2::Listener",
            "Properties": {
                "LoadBalancerArn": ref("LoadBalancer"),
                "Protocol": "HTTP",
                "Port": 80,
                "DefaultActions": [
                    {
                        "Type": "redirect",
                        "RedirectConfig": {
                            "Protocol": "HTTPS",
                            "Port": "443",
                            "Host": "#{host}",
                            "Path": "/#{path}",
                            "Query": "#{query}",
                            "StatusCode": "HTTP_301",
                        },
                    }
                ],
            },
        },
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
    """docs/configuration.md's least-privilege policy (the SSM path and the RDS-managed secret; both use AWS
    managed KMS keys, so no kms:Decrypt), plus the metrics publisher and the CloudWatch agent."""
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
                "Sid": "ReadTheSecret",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": get_att("Database", "MasterUserSecret.SecretArn"),
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
SECRET_ID='${Database.MasterUserSecret.SecretArn}'
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
        # The URL without a password: the secret's username and password complete it (docs/configuration.md).
        # A String, not a SecureString (CloudFormation cannot make those), since it holds no secret.
        "DatabaseUrlParameter": {
            "Type": "AWS::SSM::Parameter",
            "Properties": {
                "Name": sub("/${ServiceName}/database-url"),
                "Type": "String",
                # A variable map rather than ${Database.Endpoint.Address}: moto's Fn::Sub reads only the first
                # part of a dotted attribute name, and the tests create this stack in moto.
                "Value": {
                    "Fn::Sub": [
                        "postgresql://${Host}:${Port}/${DatabaseName}?sslmode=require",
                        {
                            "Host": get_att("Database", "Endpoint.Address"),
                            "Port": get_att("Database", "Endpoint.Port"),
                        },
                    ]
                },
                "Description": "DATABASE_URL without credentials (they come from PRODUCTOS_SECRET_ID)",
            },
        },
        **{
            f"{name}Parameter": {
                "Type": "AWS::SSM::Parameter",
                "Properties": {
                    "Name": sub(f"/${{ServiceName}}/{setting}"),
                    "Type": "String",
                    "Value": ref(name),
                    "Description": setting.upper().replace("-", "_"),
                },
            }
            for name, setting in (("DbPoolSize", "db-pool-size"), ("DbMaxOverflow", "db-max-overflow"))
        },
    }


def api_gateway() -> dict[str, Any]:
    """The guide's option A: an HTTP API whose $default route proxies every path to the ALB's HTTPS listener,
    throttled at its stage, with access logs."""
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
        "HttpApiIntegration": {
            "Type": "AWS::ApiGatewayV2::Integration",
            "Properties": {
                "ApiId": ref("HttpApi"),
                "IntegrationType": "HTTP_PROXY",
                "IntegrationMethod": "ANY",
                # The $default route sends the whole request path on to this URL.
                "IntegrationUri": sub("https://${DomainName}"),
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
        "LoadBalancerDnsName": output(get_att("LoadBalancer", "DNSName"), "Point DomainName here"),
        "AutoScalingGroupName": output(ref("AutoScalingGroup"), "For instance refreshes"),
        "LaunchTemplateId": output(ref("LaunchTemplate"), "The instances' launch template"),
        "TargetGroupArn": output(ref("TargetGroup"), "The ASG's target group"),
        "DatabaseEndpoint": output(get_att("Database", "Endpoint.Address"), "RDS PostgreSQL"),
        "DatabaseSecretArn": output(
            get_att("Database", "MasterUserSecret.SecretArn"),
            "The master user's secret (PRODUCTOS_SECRET_ID)",
        ),
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


def template() -> dict[str, Any]:
    settings = Settings.model_fields
    app_port = int(settings["app_port"].default)
    graceful_timeout = int(settings["graceful_timeout"].default)
    keepalive = int(settings["keepalive"].default)
    if keepalive <= ALB_IDLE_TIMEOUT:
        raise ValueError(f"PRODUCTOS_KEEPALIVE ({keepalive}) must exceed the ALB's idle timeout ({ALB_IDLE_TIMEOUT})")
    check_stop_timeouts(graceful_timeout)
    parts: list[Callable[[], dict[str, Any]]] = [
        network,
        lambda: security_groups(app_port),
        lambda: load_balancer(app_port, graceful_timeout),
        instance_role,
        instances,
        database,
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
