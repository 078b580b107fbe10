"""deploy/cloudformation.yaml: generated from productos, cfn-lint clean, with the policies, alarms and
dashboard ``productos aws`` prints, and created in moto's server over HTTP.

moto's CloudFormation (moto 5.2) creates every resource type of the template but seven, listed in
``NOT_IN_MOTO_CFN``; for those the test makes the API call CloudFormation would make with the
resource's properties (``PutScalingPolicy``, ``PutMetricAlarm``, ``apigatewayv2 Create*``). It also lacks
three attributes (``ATTRIBUTES_NOT_IN_MOTO``), which the reduced template computes from what moto has, as AWS
gives them. Everything is then read back through moto's APIs.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote, unquote

import boto3
import httpx
import pytest
import yaml
from sqlalchemy.engine import make_url

from productos.entrypoints.aws_cli import run as run_productos_aws
from productos.entrypoints.cli import build_parser
from productos.infra.aws import resources
from productos.runtime import resolve_settings
from productos.settings import Settings, env_names
from tests.integration.conftest import REGION, Aws, moto_post
from tests.integration.servers import Gunicorn

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TEMPLATE = DEPLOY / "cloudformation.yaml"
USER_DATA = DEPLOY / "user-data.sh"
ACCOUNT = "123456789012"
STACK = "productos"
DOMAIN = "api.example.com"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_cloudformation", DEPLOY / "cloudformation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(TEMPLATE.read_text())
    return loaded


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Field by field: each path at which ``actual`` differs from ``expected``."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{path}.{key}: missing" for key in expected.keys() - actual.keys()]
        out += [f"{path}.{key}: not expected" for key in actual.keys() - expected.keys()]
        for key in expected.keys() & actual.keys():
            out += differences(expected[key], actual[key], f"{path}.{key}")
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            d for i, (e, a) in enumerate(zip(expected, actual, strict=True)) for d in differences(e, a, f"{path}[{i}]")
        ]
    return [] if expected == actual else [f"{path}: expected {expected!r}, got {actual!r}"]


# --- the intrinsic functions the compared resources use -----------------------------------------------------


@dataclass
class Names:
    """What the template's ``Ref``, ``Fn::GetAtt`` and ``Fn::Sub`` yield in one stack."""

    refs: dict[str, str]
    attributes: dict[str, str]

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self.refs[argument]
            if key == "Fn::GetAtt":
                return self.attributes[".".join(argument)]
            if key == "Fn::Sub":
                text, extra = (argument, {}) if isinstance(argument, str) else argument
                variables = {name: self.resolve(item) for name, item in extra.items()}

                def one(match: re.Match[str]) -> str:
                    name = match.group(1)
                    if name.startswith("!"):
                        return "${" + name[1:] + "}"
                    return str(variables.get(name) or self.refs.get(name) or self.attributes[name])

                return re.sub(r"\$\{([^}]+)\}", one, text)
        return {key: self.resolve(item) for key, item in value.items()}


async def productos_aws(command: str, *options: str) -> Any:
    """``productos aws <command> <options>``'s JSON, through its own argument parser (no AWS call)."""
    args = build_parser().parse_args(["aws", command, *options])
    out, err = io.StringIO(), io.StringIO()
    assert await run_productos_aws(args, out=out, err=err) == 0
    assert err.getvalue() == "", err.getvalue()  # nothing left out: the template names everything
    return json.loads(out.getvalue())


def cli_options(names: Names) -> tuple[str, ...]:
    return (
        "--asg-name", names.refs["AutoScalingGroup"],
        "--namespace", names.refs["MetricsNamespace"],
        "--alb", names.attributes["LoadBalancer.LoadBalancerFullName"],
        "--target-group", names.attributes["TargetGroup.TargetGroupFullName"],
        "--db-instance", names.refs["Database"],
        "--api-id", names.refs["HttpApi"],
        "--region", names.refs["AWS::Region"],
        "--prefix", names.refs["ServiceName"],
        "--alarm-action", names.refs["AlarmTopic"],
        "--connection-budget", str(generator().DB_CONNECTION_BUDGET),
    )  # fmt: skip


# --- generated, linted --------------------------------------------------------------------------------------


def test_the_committed_template_is_the_generators_output() -> None:
    assert TEMPLATE.read_text() == generator().render(), (
        "deploy/cloudformation.yaml is stale: run python deploy/cloudformation.py"
    )


def test_cfn_lint_finds_nothing() -> None:
    """Errors, warnings and informational rules, in two regions; deploy/README.md lists what is not run."""
    from cfnlint.api import ManualArgs, lint

    matches = lint(
        TEMPLATE.read_text(),
        config=ManualArgs(regions=["us-east-1", "eu-west-1"], include_checks=["I"]),
    )
    assert [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in matches] == []


def test_user_data_is_valid_bash_without_braced_variables() -> None:
    subprocess.run(["bash", "-n", str(USER_DATA)], check=True)
    assert "${" not in USER_DATA.read_text().partition("\n")[2]


def test_the_image_build_and_the_readme_name_files_that_exist() -> None:
    packer = DEPLOY / "packer" / "productos.pkr.hcl"
    named = re.findall(r'"\$\{path\.root\}/([^"]+)"', packer.read_text())
    assert sorted(named) == ["../productos.service", "install.sh"]
    for name in named:
        assert (packer.parent / name).resolve().is_file(), name
    subprocess.run(["bash", "-n", str(DEPLOY / "packer" / "install.sh")], check=True)
    links = re.findall(r"\]\(([^)#:]+)\)", (DEPLOY / "README.md").read_text())
    assert {"cloudformation.yaml", "user-data.sh", "productos.service", "packer/productos.pkr.hcl"} <= set(links)
    for link in links:
        assert (DEPLOY / link).is_file(), link


# --- the template against the guide and the service's settings ----------------------------------------------


def rule(entry: dict[str, Any]) -> tuple[int, int, Any]:
    return entry["FromPort"], entry["ToPort"], entry.get("CidrIp") or entry["SourceSecurityGroupId"]


def test_security_groups_open_nothing_to_the_internet(template: dict[str, Any]) -> None:
    """The guide's groups, with the edge closed: HTTPS to the (internal) ALB from API Gateway's VPC link only; the
    app port from the ALB; 5432 from the instances, and from RDS Proxy when there is one."""
    groups = of_type(template, "AWS::EC2::SecurityGroup")
    rules = {name: [rule(i) for i in r["Properties"].get("SecurityGroupIngress", [])] for name, r in groups.items()}
    assert rules == {
        "VpcLinkSecurityGroup": [],
        "LoadBalancerSecurityGroup": [(443, 443, {"Ref": "VpcLinkSecurityGroup"})],
        "InstanceSecurityGroup": [(8000, 8000, {"Ref": "LoadBalancerSecurityGroup"})],
        "DatabaseSecurityGroup": [(5432, 5432, {"Ref": "InstanceSecurityGroup"})],
        "DatabaseProxySecurityGroup": [(5432, 5432, {"Ref": "InstanceSecurityGroup"})],
    }
    assert [rule(e) for e in groups["VpcLinkSecurityGroup"]["Properties"]["SecurityGroupEgress"]] == [
        (443, 443, generator().VPC_CIDR)
    ]
    (extra,) = of_type(template, "AWS::EC2::SecurityGroupIngress").values()
    assert extra["Condition"] == groups["DatabaseProxySecurityGroup"]["Condition"] == "UseRdsProxy"
    assert extra["Properties"]["GroupId"] == {"Ref": "DatabaseSecurityGroup"}
    assert rule(extra["Properties"]) == (5432, 5432, {"Ref": "DatabaseProxySecurityGroup"})
    assert "0.0.0.0/0" not in json.dumps([r for r in template["Resources"].values() if "SecurityGroup" in r["Type"]])


def test_timeouts_match_the_services_settings(template: dict[str, Any]) -> None:
    fields = Settings.model_fields
    resources_ = template["Resources"]
    attributes = {a["Key"]: a["Value"] for a in resources_["TargetGroup"]["Properties"]["TargetGroupAttributes"]}
    assert attributes["deregistration_delay.timeout_seconds"] == str(fields["graceful_timeout"].default) == "30"
    assert resources_["TargetGroup"]["Properties"]["Port"] == fields["app_port"].default
    idle = {a["Key"]: a["Value"] for a in resources_["LoadBalancer"]["Properties"]["LoadBalancerAttributes"]}
    assert int(idle["idle_timeout.timeout_seconds"]) < fields["keepalive"].default


def unit_value(name: str) -> int:
    unit = (DEPLOY / "productos.service").read_text()
    found = re.search(rf"^{name}=(\d+)$", unit, re.M)
    assert found is not None, name
    return int(found.group(1))


def test_the_stop_of_an_instance_fits_together(template: dict[str, Any], tmp_path: Path) -> None:
    """The drain, gunicorn's graceful timeout, systemd's TimeoutStopSec, the target group's health check and
    deregistration delay, and the Auto Scaling group's instance refresh, checked against each other."""
    graceful = Settings.model_fields["graceful_timeout"].default
    drain = unit_value("Environment=PRODUCTOS_DRAIN_SECONDS")
    stop = unit_value("TimeoutStopSec")
    r = template["Resources"]
    tg = r["TargetGroup"]["Properties"]
    interval, timeout = tg["HealthCheckIntervalSeconds"], tg["HealthCheckTimeoutSeconds"]

    # Stopped while registered, an instance drains until every ALB node has seen /health fail enough times.
    assert tg["HealthCheckPath"] == "/health"
    assert interval * tg["UnhealthyThresholdCount"] + timeout <= drain
    assert Settings.model_fields["health_timeout"].default < timeout < interval
    # ... and no longer than a deploy needs: the guide's 30 s x 3 checks made that 90 s per instance.
    assert drain <= 20 and Settings.model_fields["drain_seconds"].default < drain

    # gunicorn's master, with the unit's environment, waits for the drain and the in-flight requests; each worker
    # keeps its margin for the app's shutdown inside that; systemd waits longer than the master.
    env = {**os.environ, "PRODUCTOS_DRAIN_SECONDS": str(drain)}
    master = subprocess.run(
        [sys.executable, "-c", "from productos import gunicorn_conf as c; print(c.graceful_timeout)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert int(master.stdout) == drain + graceful
    assert stop >= drain + graceful + 5

    # The Auto Scaling group deregisters an instance and waits the deregistration delay before it terminates it:
    # requests in flight at the ALB get the graceful timeout, as they do after SIGTERM.
    attributes = {a["Key"]: a["Value"] for a in tg["TargetGroupAttributes"]}
    assert int(attributes["deregistration_delay.timeout_seconds"]) == graceful

    # The instance refresh (deploy/README.md, both commands): its warm-up is the group's health check grace
    # period and the scaling policies' warm-up, in which a new instance passes the ALB's checks many times over.
    readme = (DEPLOY / "README.md").read_text()
    preferences = [json.loads(found) for found in re.findall(r"--preferences '([^']+)'", readme)]
    assert len(preferences) == 2 and preferences[0] == preferences[1]
    asg = r["AutoScalingGroup"]["Properties"]
    warmup = preferences[0]["InstanceWarmup"]
    assert warmup == asg["HealthCheckGracePeriod"] == resources.INSTANCE_WARMUP
    assert interval * tg["HealthyThresholdCount"] < warmup
    assert preferences[0]["MinHealthyPercentage"] >= 50  # one of two instances at a time: the other serves


def test_instances_rds_and_api_are_the_guides(template: dict[str, Any]) -> None:
    r = template["Resources"]
    data = r["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"] == {
        "HttpEndpoint": "enabled", "HttpTokens": "required", "HttpPutResponseHopLimit": 1,
        "InstanceMetadataTags": "enabled",
    }  # fmt: skip
    assert (
        r["PrivateSubnet1"]["Properties"]["AvailabilityZone"] != r["PrivateSubnet2"]["Properties"]["AvailabilityZone"]
    )
    asg = r["AutoScalingGroup"]["Properties"]
    assert asg["VPCZoneIdentifier"] == [{"Ref": "PrivateSubnet1"}, {"Ref": "PrivateSubnet2"}]
    db = r["Database"]["Properties"]
    guide = (
        db["MultiAZ"],
        db["StorageEncrypted"],
        db["BackupRetentionPeriod"],
        db["ManageMasterUserPassword"],
    )
    assert guide == (
        True, True, 7, True,
    )  # fmt: skip
    assert "MasterUserPassword" not in db and db["PubliclyAccessible"] is False
    assert r["Database"]["DeletionPolicy"] == "Snapshot"
    stage = r["HttpApiStage"]["Properties"]
    assert stage["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
    }
    statements = instance_statements(template)
    actions = sorted(a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))
    assert actions == [
        "cloudwatch:PutMetricData", "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents",
        "rds-db:connect", "secretsmanager:GetSecretValue", "ssm:GetParametersByPath",
    ]  # fmt: skip
    assert all((s["Effect"] == "Allow" and s["Resource"] != "*") or "Condition" in s for s in statements)


def instance_statements(template: dict[str, Any], conditions: dict[str, bool] | None = None) -> list[dict[str, Any]]:
    """The instance role's statements; a conditional one (Fn::If) as it is when ``conditions`` hold, or either
    way when none is given."""
    out = []
    for statement in template["Resources"]["InstanceRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]:
        if "Fn::If" in statement:
            condition, then, otherwise = statement["Fn::If"]
            assert otherwise == {"Ref": "AWS::NoValue"}
            if conditions is not None and not conditions[condition]:
                continue
            statement = then
        out.append(statement)
    return out


def test_the_pools_at_the_asgs_maximum_fit_the_connection_budget(template: dict[str, Any]) -> None:
    """The pool parameters' defaults are the largest whose worst case at the ASG's maximum fits the budget, and
    the RDS connections alarm fires at 80 % of it."""
    kit = generator()
    parameters, r = template["Parameters"], template["Resources"]
    per_worker = int(parameters["DbPoolSize"]["Default"]) + int(parameters["DbMaxOverflow"]["Default"])
    instances = int(r["AutoScalingGroup"]["Properties"]["MaxSize"])
    budget = int(r["DbConnectionBudgetParameter"]["Properties"]["Value"])
    assert (instances, budget) == (kit.ASG_MAX, kit.DB_CONNECTION_BUDGET)
    assert r["AsgMaxSizeParameter"]["Properties"]["Value"] == str(instances)
    assert instances * kit.INSTANCE_WORKERS * per_worker <= budget < instances * kit.INSTANCE_WORKERS * (per_worker + 1)
    alarm = r["AlarmRdsConnections"]["Properties"]
    assert (alarm["MetricName"], alarm["Namespace"], alarm["Dimensions"]) == (
        "DatabaseConnections",
        "AWS/RDS",
        [{"Name": "DBInstanceIdentifier", "Value": {"Ref": "Database"}}],
    )
    assert alarm["Threshold"] == 0.8 * budget and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


# --- the edge: API Gateway is the only way in, and /metrics stays in the VPC -----------------------------------


def test_the_alb_is_reachable_from_api_gateway_only(template: dict[str, Any]) -> None:
    """An internal ALB in the private subnets, with one HTTPS listener, which API Gateway's private integration
    calls through a VPC link: no client can go around API Gateway's throttling."""
    r = template["Resources"]
    alb = r["LoadBalancer"]["Properties"]
    assert alb["Scheme"] == "internal"
    assert alb["Subnets"] == [{"Ref": "PrivateSubnet1"}, {"Ref": "PrivateSubnet2"}]
    assert alb["SecurityGroups"] == [{"Ref": "LoadBalancerSecurityGroup"}]
    (listener,) = of_type(template, "AWS::ElasticLoadBalancingV2::Listener").values()
    assert listener is r["HttpsListener"] and listener["Properties"]["Protocol"] == "HTTPS"
    link = r["VpcLink"]["Properties"]
    assert link["SubnetIds"] == [{"Ref": "PrivateSubnet1"}, {"Ref": "PrivateSubnet2"}]
    assert link["SecurityGroupIds"] == [{"Ref": "VpcLinkSecurityGroup"}]
    integration = r["HttpApiIntegration"]["Properties"]
    assert {k: integration[k] for k in ("IntegrationType", "ConnectionType", "ConnectionId", "IntegrationUri")} == {
        "IntegrationType": "HTTP_PROXY",
        "ConnectionType": "VPC_LINK",
        "ConnectionId": {"Ref": "VpcLink"},
        "IntegrationUri": {"Ref": "HttpsListener"},
    }
    # TLS to the ALB, its certificate checked for the name it covers.
    assert integration["TlsConfig"] == {"ServerNameToVerify": {"Ref": "DomainName"}}
    assert listener["Properties"]["Certificates"] == [{"CertificateArn": {"Ref": "CertificateArn"}}]
    # Nothing else in the VPC faces the Internet but the NAT gateway's way out.
    assert [name for name, res in r.items() if res["Properties"].get("Scheme") == "internet-facing"] == []


def metrics_rules(template: dict[str, Any]) -> list[dict[str, Any]]:
    rules = of_type(template, "AWS::ElasticLoadBalancingV2::ListenerRule")
    return [rules[name]["Properties"] for name in ("MetricsNotFoundRule", "MetricsEncodedNotFoundRule")]


def test_the_alb_answers_metrics_404_itself(template: dict[str, Any]) -> None:
    literal, encoded = metrics_rules(template)
    for rule_, priority in ((literal, 1), (encoded, 2)):
        assert rule_["ListenerArn"] == {"Ref": "HttpsListener"}
        assert rule_["Priority"] == priority  # before anything is forwarded
        assert rule_["Actions"] == [
            {
                "Type": "fixed-response",
                "FixedResponseConfig": {
                    "StatusCode": "404",
                    "ContentType": "application/json",
                    "MessageBody": '{"detail":"Not Found"}',
                },
            }
        ]
    assert literal["Conditions"] == [
        {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/metrics", "/metrics/*"]}}
    ]
    ((condition,),) = [rule_["Conditions"] for rule_ in (encoded,)]
    assert condition["Field"] == "path-pattern" and list(condition["PathPatternConfig"]) == ["RegexValues"]


def _spellings() -> Iterator[str]:
    """/metrics with each subset of its letters percent-encoded, in both cases of hex, and what may follow it."""
    for mask in range(1 << 7):
        for upper in (False, True):
            letters = "".join(
                (f"%{ord(c):02X}" if upper else f"%{ord(c):02x}") if mask >> i & 1 else c
                for i, c in enumerate("metrics")
            )
            for tail in ("", "/", "/x", "%2F", "%2fprom"):
                yield f"/{letters}{tail}"


def test_every_spelling_of_metrics_is_caught_and_nothing_else(template: dict[str, Any]) -> None:
    """The ALB compares the path as sent; the service (uvicorn) decodes it first. So a path is refused at the ALB
    exactly when, decoded, it is /metrics or under it."""
    (regex,) = metrics_rules(template)[1]["Conditions"][0]["PathPatternConfig"]["RegexValues"]
    assert len(regex) <= 128  # the ALB's limit on a condition value
    pattern = re.compile(regex)
    spellings = list(_spellings())
    assert len(spellings) == 128 * 2 * 5
    for path in spellings:
        decoded = unquote(path)
        assert decoded == "/metrics" or decoded.startswith("/metrics/"), path
        assert pattern.fullmatch(path), path
    for path in ("/", "/health", "/health/live", "/productos", "/productos/1", "/docs", "/openapi.json",
                 "/metricsx", "/metric", "/Metrics", "/productos/metrics", "/m%2565trics"):  # fmt: skip
        decoded = unquote(path)
        assert not (decoded == "/metrics" or decoded.startswith("/metrics/")) or path == "/m%2565trics"
        assert not pattern.fullmatch(path), path


def test_an_encoded_metrics_path_reaches_the_service(tmp_path: Path) -> None:
    """Why the encoded spellings need their own rule: uvicorn decodes the path before routing, so /m%65trics is
    /metrics to the service (and /metrics itself is served: the scrapers in the VPC need it)."""
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}", "LOG_LEVEL": "warning"}
    with Gunicorn(tmp_path, env, workers=1) as server, httpx.Client(base_url=server.base_url, timeout=10) as http:
        for path in ("/metrics", "/m%65trics", "/%6Detrics"):
            answer = http.get(path)
            assert answer.status_code == 200 and "http_server_request_duration_seconds" in answer.text, path


# --- both logins in Secrets Manager, and RDS Proxy as an option -------------------------------------------------


def test_both_logins_are_in_secrets_manager(template: dict[str, Any]) -> None:
    """The master user's (RDS makes and rotates it) is the schema owner's, for migrations; the service's row-only
    login is a secret the stack generates; each instance reads both and is told which is which."""
    r = template["Resources"]
    assert r["Database"]["Properties"]["ManageMasterUserPassword"] is True
    generated = r["AppDatabaseSecret"]["Properties"]["GenerateSecretString"]
    assert generated["SecretStringTemplate"] == {"Fn::Sub": '{"username": "${AppDatabaseUsername}"}'}
    assert generated["GenerateStringKey"] == "password" and generated["PasswordLength"] >= 32
    assert (
        template["Parameters"]["AppDatabaseUsername"]["Default"]
        != template["Parameters"]["DatabaseUsername"]["Default"]
    )
    (reads,) = [s for s in instance_statements(template) if s["Action"] == "secretsmanager:GetSecretValue"]
    assert reads["Resource"] == [
        {"Ref": "AppDatabaseSecret"},
        {"Fn::GetAtt": ["Database", "MasterUserSecret.SecretArn"]},
    ]
    header = generator().USER_DATA_HEADER
    assert "SECRET_ID='${AppDatabaseSecret}'" in header
    assert "MIGRATE_SECRET_ID='${Database.MasterUserSecret.SecretArn}'" in header
    user_data = USER_DATA.read_text()
    assert 'Environment="PRODUCTOS_SECRET_ID=$SECRET_ID"' in user_data
    assert 'Environment="PRODUCTOS_MIGRATE_SECRET_ID=$MIGRATE_SECRET_ID"' in user_data
    migrate_url = r["DatabaseMigrateUrlParameter"]["Properties"]
    assert migrate_url["Name"] == {"Fn::Sub": "/${ServiceName}/database-migrate-url"}
    assert migrate_url["Value"]["Fn::Sub"][1] == {
        "Host": {"Fn::GetAtt": ["Database", "Endpoint.Address"]},
        "Port": {"Fn::GetAtt": ["Database", "Endpoint.Port"]},
    }
    assert "Condition" not in r["DatabaseMigrateUrlParameter"]  # straight to the database, proxy or not


PROXY_RESOURCES = {
    "DatabaseProxy": "AWS::RDS::DBProxy",
    "DatabaseProxyTargetGroup": "AWS::RDS::DBProxyTargetGroup",
    "DatabaseProxyRole": "AWS::IAM::Role",
    "DatabaseProxySecurityGroup": "AWS::EC2::SecurityGroup",
    "DatabaseFromProxyIngress": "AWS::EC2::SecurityGroupIngress",
    "DbPoolerParameter": "AWS::SSM::Parameter",
}


def test_rds_proxy_is_an_option_of_the_template(template: dict[str, Any]) -> None:
    r, conditions = template["Resources"], template["Conditions"]
    assert template["Parameters"]["EnableRdsProxy"]["Default"] == "false"
    assert conditions["UseRdsProxy"] == {"Fn::Equals": [{"Ref": "EnableRdsProxy"}, "true"]}
    assert conditions["UseRdsProxyIamAuth"] == {
        "Fn::And": [{"Condition": "UseRdsProxy"}, {"Fn::Equals": [{"Ref": "RdsProxyIamAuth"}, "true"]}]
    }
    made = {name: res["Type"] for name, res in r.items() if res.get("Condition") == "UseRdsProxy"}
    assert made == PROXY_RESOURCES
    proxy = r["DatabaseProxy"]["Properties"]
    assert proxy["EngineFamily"] == "POSTGRESQL" and proxy["RequireTLS"] is True
    (auth,) = proxy["Auth"]
    assert auth["AuthScheme"] == "SECRETS" and auth["SecretArn"] == {"Ref": "AppDatabaseSecret"}
    assert auth["IAMAuth"] == {"Fn::If": ["UseRdsProxyIamAuth", "REQUIRED", "DISABLED"]}
    assert proxy["RoleArn"] == {"Fn::GetAtt": ["DatabaseProxyRole", "Arn"]}
    assert proxy["VpcSecurityGroupIds"] == [{"Ref": "DatabaseProxySecurityGroup"}]
    (reads,) = r["DatabaseProxyRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert (reads["Action"], reads["Resource"]) == ("secretsmanager:GetSecretValue", {"Ref": "AppDatabaseSecret"})
    targets = r["DatabaseProxyTargetGroup"]["Properties"]
    assert (targets["DBProxyName"], targets["DBInstanceIdentifiers"]) == (
        {"Ref": "DatabaseProxy"},
        [{"Ref": "Database"}],
    )
    pool = targets["ConnectionPoolConfigurationInfo"]
    assert pool["MaxConnectionsPercent"] < 100  # room for the owner's direct logins
    assert pool["ConnectionBorrowTimeout"] <= Settings.model_fields["db_statement_timeout"].default
    assert pool["SessionPinningFilters"] == ["EXCLUDE_VARIABLE_SETS"]
    # DB_POOLER=transaction for the instances, in the SSM path they read.
    pooler = r["DbPoolerParameter"]["Properties"]
    assert (pooler["Name"], pooler["Value"]) == ({"Fn::Sub": "/${ServiceName}/db-pooler"}, "transaction")
    iam = r["DbIamAuthParameter"]
    assert (iam["Condition"], iam["Properties"]["Name"], iam["Properties"]["Value"]) == (
        "UseRdsProxyIamAuth", {"Fn::Sub": "/${ServiceName}/db-iam-auth"}, "true",
    )  # fmt: skip
    (connect,) = [s for s in instance_statements(template) if s["Action"] == "rds-db:connect"]
    assert instance_statements(template, {"UseRdsProxyIamAuth": False}).count(connect) == 0
    assert "dbuser:${ProxyId}/${AppDatabaseUsername}" in connect["Resource"]["Fn::Sub"][0]
    assert template["Outputs"]["DatabaseProxyEndpoint"]["Condition"] == "UseRdsProxy"


def stack_names(template: dict[str, Any], **parameters: str) -> Names:
    """What an instance of a stack with these parameters reads: names for the template's intrinsic functions."""
    defaults = {name: str(p["Default"]) for name, p in template["Parameters"].items() if "Default" in p}
    return Names(
        refs={**defaults, **parameters, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"},
        attributes={
            "Database.Endpoint.Address": "productos-db.c1.us-east-1.rds.amazonaws.com",
            "Database.Endpoint.Port": "5432",
            "DatabaseProxy.Endpoint": "productos-api-proxy.proxy-c1.us-east-1.rds.amazonaws.com",
        },
    )


@pytest.mark.parametrize("proxy", [True, False])
async def test_the_instances_read_where_each_login_goes(template: dict[str, Any], aws: Aws, proxy: bool) -> None:
    """The SSM parameters a stack writes (with and without the proxy) and its two secrets, read by productos as an
    instance does: DATABASE_URL to the proxy (DB_POOLER=transaction) or the database, as the service's login;
    DATABASE_MIGRATE_URL always straight to the database, as the master user."""
    names = stack_names(template, EnableRdsProxy=str(proxy).lower())
    conditions = {"UseRdsProxy": proxy, "UseRdsProxyIamAuth": False}
    for resource in of_type(template, "AWS::SSM::Parameter").values():
        if conditions.get(resource.get("Condition", ""), True):
            properties = names.resolve(evaluate(resource["Properties"], conditions))
            aws.ssm.put_parameter(Name=properties["Name"], Value=properties["Value"], Type="String", Overwrite=True)
    app = aws.put_secret("app", {"username": names.refs["AppDatabaseUsername"], "password": "AppPassw0rd"})
    owner = aws.put_secret("rds!db-1", {"username": names.refs["DatabaseUsername"], "password": "Own3r:pw"})
    settings = (
        await resolve_settings(env_file=None, ssm_path="/productos-api/", secret_id=app, migrate_secret_id=owner)
    ).settings
    service = make_url(settings.database_url.get_secret_value())
    assert (service.username, service.password) == ("productos_app", "AppPassw0rd")
    assert service.host == names.attributes["DatabaseProxy.Endpoint" if proxy else "Database.Endpoint.Address"]
    assert settings.db_pooler == ("transaction" if proxy else "none")
    assert settings.database_migrate_url is not None
    migrations = make_url(settings.database_migrate_url.get_secret_value())
    assert (migrations.username, migrations.password, migrations.host) == (
        "productos", "Own3r:pw", names.attributes["Database.Endpoint.Address"],
    )  # fmt: skip
    assert service.query == migrations.query == {"sslmode": "require"}


def evaluate(value: Any, conditions: dict[str, bool]) -> Any:
    """``value`` with each Fn::If decided by ``conditions``."""
    if isinstance(value, list):
        return [evaluate(item, conditions) for item in value]
    if not isinstance(value, dict):
        return value
    if list(value) == ["Fn::If"]:
        condition, then, otherwise = value["Fn::If"]
        return evaluate(then if conditions[condition] else otherwise, conditions)
    return {key: evaluate(item, conditions) for key, item in value.items()}


# --- the start of an instance ---------------------------------------------------------------------------------


def unit_section(name: str) -> list[str]:
    section, lines = None, []
    for line in (DEPLOY / "productos.service").read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == name and line and not line.startswith("#"):
            lines.append(line)
    return lines


def test_the_start_of_an_instance_fits_together(template: dict[str, Any]) -> None:
    """The migration before the service: its failure stops the start (no '-'), it waits for a database that is
    coming up, systemd gives it that time, an instance that waited still comes up within the Auto Scaling group's
    grace period, and a database that stays down ends in a failed unit, not in restarts for ever."""
    (pre,) = [line.partition("=")[2] for line in unit_section("Service") if line.startswith("ExecStartPre=")]
    assert not pre.startswith(("-", "@", ":", "+", "!"))
    found = re.fullmatch(r"/opt/productos/venv/bin/productos migrate --wait (\d+)", pre)
    assert found is not None, pre
    wait = int(found.group(1))
    grace = template["Resources"]["AutoScalingGroup"]["Properties"]["HealthCheckGracePeriod"]
    assert wait >= 120  # an RDS Multi-AZ failover: one to two minutes
    assert wait + 60 <= grace
    assert unit_value("TimeoutStartSec") >= wait + 60
    limits = dict(line.split("=", 1) for line in unit_section("Unit") if line.startswith("StartLimit"))
    assert set(limits) == {"StartLimitIntervalSec", "StartLimitBurst"}  # in [Unit]: systemd ignores them in [Service]
    assert not [line for line in unit_section("Service") if line.startswith("StartLimit")]
    assert int(limits["StartLimitBurst"]) * (wait + unit_value("RestartSec")) < int(limits["StartLimitIntervalSec"])
    assert unit_section("Service").count("Restart=always") == 1


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """systemd's own reading of the unit (systemd-analyze verify, Debian's systemd), with the command it runs
    pointed at a stand-in: no unknown key, no misplaced one."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze (Debian's systemd package) is needed to check deploy/productos.service")
    stand_in = tmp_path / "productos"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    unit = tmp_path / "productos.service"
    unit.write_text(
        (DEPLOY / "productos.service").read_text().replace("/opt/productos/venv/bin/productos", str(stand_in))
    )
    verified = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")


def test_the_generator_refuses_a_migration_that_hides_its_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = generator()
    unit = (DEPLOY / "productos.service").read_text()
    for broken, complaint in (
        (unit.replace("ExecStartPre=/opt", "ExecStartPre=-/opt"), "without '-'"),
        (unit.replace(" migrate --wait 180", " migrate"), "without '-'"),
        (unit.replace("TimeoutStartSec=300", "TimeoutStartSec=90"), "TimeoutStartSec"),
        (unit.replace("StartLimitIntervalSec=900", "StartLimitIntervalSec=300"), "for ever"),
    ):
        assert broken != unit
        path = tmp_path / "productos.service"
        path.write_text(broken)
        monkeypatch.setattr(kit, "UNIT", path)
        with pytest.raises(ValueError, match=re.escape(complaint)):
            kit.check_start(kit.HEALTH_CHECK_GRACE_PERIOD)


# --- one source of truth: the template's policies, alarms and dashboard are productos aws's -----------------


OFFLINE = Names(
    refs={
        "AutoScalingGroup": "pedidos-api-asg",
        "MetricsNamespace": "Pedidos",
        "Database": "pedidos-db",
        "HttpApi": "a1b2c3d4e5",
        "AWS::Region": "eu-west-1",
        "ServiceName": "pedidos-api",
        "AlarmTopic": "arn:aws:sns:eu-west-1:123456789012:pedidos-alarms",
    },
    attributes={
        "LoadBalancer.LoadBalancerFullName": "app/pedidos-alb/0123456789abcdef",
        "TargetGroup.TargetGroupFullName": "targetgroup/pedidos-tg/fedcba9876543210",
    },
)


@pytest.fixture
def no_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No productos or AWS setting from the environment or a .env: only what a test sets."""
    for key in list(os.environ):
        if key.upper() in env_names() or key.startswith(("AWS_", "PRODUCTOS_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("no_settings")
async def test_the_templates_policies_alarms_and_dashboard_are_productos_aws_output(
    template: dict[str, Any],
) -> None:
    """Names other than the defaults, so a name the template hard-codes would show."""
    options = cli_options(OFFLINE)

    policies = await productos_aws("scaling-policies", *options)
    in_template = list(of_type(template, "AWS::AutoScaling::ScalingPolicy").values())
    assert len(in_template) == len(policies) == 3
    for printed, resource in zip(policies, in_template, strict=True):
        # CloudFormation's ScalingPolicy has no name property: the stack names it. Every other field is equal.
        expected = {key: value for key, value in printed.items() if key != "PolicyName"}
        assert differences(expected, OFFLINE.resolve(resource["Properties"])) == []

    alarms = await productos_aws("alarms", *options)
    in_template = list(of_type(template, "AWS::CloudWatch::Alarm").values())
    assert len(in_template) == len(alarms) == 5
    for printed, resource in zip(alarms, in_template, strict=True):
        assert differences(printed, OFFLINE.resolve(resource["Properties"])) == []

    board = await productos_aws("dashboard", *options)
    (resource,) = of_type(template, "AWS::CloudWatch::Dashboard").values()
    resolved = OFFLINE.resolve(resource["Properties"])
    assert resolved["DashboardName"] == board["DashboardName"] == "pedidos-api"
    assert differences(board["DashboardBody"], json.loads(resolved["DashboardBody"])) == []


# --- the stack in moto --------------------------------------------------------------------------------------

#: Resource types of the template that moto's CloudFormation does not implement.
NOT_IN_MOTO_CFN = {
    "AWS::ApiGatewayV2::Api",
    "AWS::ApiGatewayV2::Integration",
    "AWS::ApiGatewayV2::Route",
    "AWS::ApiGatewayV2::Stage",
    "AWS::ApiGatewayV2::VpcLink",
    "AWS::AutoScaling::ScalingPolicy",
    "AWS::CloudWatch::Alarm",
    "AWS::SNS::Subscription",
    "AWS::SecretsManager::Secret",
    "AWS::RDS::DBProxy",
    "AWS::RDS::DBProxyTargetGroup",
}
#: Resources of types moto's CloudFormation has, with properties its API refuses; the tests above check them on
#: the template.
NOT_IN_MOTO_PROPERTIES = {
    # moto's elbv2 reads a path-pattern condition's Values only, not RegexValues.
    "MetricsEncodedNotFoundRule",
}
#: Attributes moto's CloudFormation does not give, and how AWS forms them from what moto does give.
ATTRIBUTES_NOT_IN_MOTO: dict[str, Any] = {
    "LoadBalancer.LoadBalancerFullName": {
        "Fn::Select": [1, {"Fn::Split": [":loadbalancer/", {"Ref": "LoadBalancer"}]}]
    },
    "TargetGroup.TargetGroupFullName": {
        "Fn::Join": [
            "",
            ["targetgroup/", {"Fn::Select": [1, {"Fn::Split": [":targetgroup/", {"Ref": "TargetGroup"}]}]}],
        ]
    },
    # RDS makes this secret (ManageMasterUserPassword); the test makes it, as RDS would, before the stack.
    "Database.MasterUserSecret.SecretArn": None,
}


def client(endpoint: str, service: str) -> Any:
    return boto3.client(
        service, region_name=REGION, endpoint_url=endpoint,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


def reduce_for_moto(template: dict[str, Any], literals: dict[str, str]) -> dict[str, Any]:
    """The template less ``NOT_IN_MOTO_CFN``'s resources (and outputs naming them), with the attributes moto
    lacks computed, and ``literals`` (``Ref``s or attributes of what the test made itself) written in."""
    computed = {k: v for k, v in ATTRIBUTES_NOT_IN_MOTO.items() if v is not None}

    def rewrite(value: Any) -> Any:
        if isinstance(value, list):
            return [rewrite(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref" and argument in literals:
                return literals[argument]
            if key == "Fn::GetAtt":
                name = ".".join(argument)
                if name in literals:
                    return literals[name]
                if name in computed:
                    return computed[name]
            if key == "Fn::Sub":
                text, extra = (argument, {}) if isinstance(argument, str) else argument
                extra = {k: rewrite(v) for k, v in extra.items()}
                for name, literal in literals.items():
                    text = text.replace("${" + name + "}", literal)
                for name, expression in computed.items():
                    if "${" + name + "}" in text:
                        variable = name.replace(".", "")
                        text = text.replace("${" + name + "}", "${" + variable + "}")
                        extra[variable] = expression
                return {"Fn::Sub": [text, extra] if extra else text}
        return {key: rewrite(item) for key, item in value.items()}

    kept = {
        name: r
        for name, r in template["Resources"].items()
        if r["Type"] not in NOT_IN_MOTO_CFN and name not in NOT_IN_MOTO_PROPERTIES
    }
    dropped = set(template["Resources"]) - set(kept)
    outputs = {
        name: o for name, o in template["Outputs"].items()
        if not any(re.search(rf'"{d}"|\$\{{{d}[}}.]', json.dumps(o)) for d in dropped - set(literals))
    }  # fmt: skip
    return rewrite({**template, "Resources": kept, "Outputs": outputs})


@dataclass
class MotoStack:
    endpoint: str
    template: dict[str, Any]
    physical: dict[str, str]
    names: Names
    secret_arn: str
    password: str
    app_secret_arn: str
    app_login: dict[str, str]

    def client(self, service: str) -> Any:
        return client(self.endpoint, service)


@pytest.fixture(scope="module")
def moto_stack(moto_endpoint: str, template: dict[str, Any]) -> Iterator[MotoStack]:
    from moto.cloudformation.parsing import get_model_map

    moto_post(moto_endpoint, "/moto-api/reset")
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert kinds - set(get_model_map()) == NOT_IN_MOTO_CFN, "moto's CloudFormation changed: update NOT_IN_MOTO_CFN"

    parameters = {name: str(p["Default"]) for name, p in template["Parameters"].items() if "Default" in p}
    parameters["AmiId"] = client(moto_endpoint, "ec2").describe_images()["Images"][0]["ImageId"]
    parameters["CertificateArn"] = client(moto_endpoint, "acm").request_certificate(DomainName=DOMAIN)["CertificateArn"]
    parameters["DomainName"] = DOMAIN
    base = Names(
        refs={
            **parameters,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::StackName": STACK,
        },
        attributes={},
    )

    # Made before the stack, because resources moto does create name them: the master user's secret (RDS
    # makes it), the service's login (the instance role and the User Data name it: made with the template's
    # GenerateSecretString, as CloudFormation would) and the HTTP API (the dashboard and an alarm use its id).
    secrets = client(moto_endpoint, "secretsmanager")
    password = "Rds-managed-pa55word!"
    secret_arn = secrets.create_secret(
        Name="rds!db-0123abcd-4567-89ef-0123-456789abcdef",
        SecretString=json.dumps({"username": parameters["DatabaseUsername"], "password": password}),
    )["ARN"]
    generate = base.resolve(template["Resources"]["AppDatabaseSecret"]["Properties"]["GenerateSecretString"])
    app_login = {
        **json.loads(generate["SecretStringTemplate"]),
        generate["GenerateStringKey"]: secrets.get_random_password(
            PasswordLength=generate["PasswordLength"], ExcludePunctuation=generate["ExcludePunctuation"]
        )["RandomPassword"],
    }
    app_secret_arn = secrets.create_secret(Name="AppDatabaseSecret-0123", SecretString=json.dumps(app_login))["ARN"]
    api = template["Resources"]["HttpApi"]["Properties"]
    made = client(moto_endpoint, "apigatewayv2").create_api(**base.resolve(api))
    literals = {
        "Database.MasterUserSecret.SecretArn": secret_arn,
        "AppDatabaseSecret": app_secret_arn,
        "HttpApi": made["ApiId"],
        "HttpApi.ApiEndpoint": made["ApiEndpoint"],
    }

    cloudformation = client(moto_endpoint, "cloudformation")
    cloudformation.create_stack(
        StackName=STACK,
        TemplateBody=json.dumps(reduce_for_moto(template, literals)),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    stack = cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    # moto lists a resource whose condition is false as an empty entry, and a DB subnet group without its id.
    physical = {
        r["LogicalResourceId"]: r.get("PhysicalResourceId", "")
        for r in cloudformation.describe_stack_resources(StackName=STACK)["StackResources"]
        if "LogicalResourceId" in r
    }
    assert "DnsRecord" not in physical  # no HostedZoneId: no record
    log_groups = client(moto_endpoint, "logs").describe_log_groups(logGroupNamePrefix="/productos-api/")["logGroups"]
    names = Names(
        refs={**base.refs, **physical, "HttpApi": made["ApiId"], "AppDatabaseSecret": app_secret_arn},
        attributes={
            "LoadBalancer.LoadBalancerFullName": physical["LoadBalancer"].split(":loadbalancer/", 1)[1],
            "TargetGroup.TargetGroupFullName": "targetgroup/" + physical["TargetGroup"].split(":targetgroup/", 1)[1],
            "Database.MasterUserSecret.SecretArn": secret_arn,
            **{f"{name}.Arn": g["arn"] for g in log_groups for name in physical if physical[name] == g["logGroupName"]},
        },
    )

    # What CloudFormation would do for the types moto's does not implement, in the template's order.
    gateway = client(moto_endpoint, "apigatewayv2")
    autoscaling = client(moto_endpoint, "autoscaling")
    cloudwatch = client(moto_endpoint, "cloudwatch")
    for name, resource in template["Resources"].items():
        kind = resource["Type"]
        if kind not in NOT_IN_MOTO_CFN or kind in ("AWS::ApiGatewayV2::Api", "AWS::SecretsManager::Secret"):
            continue
        if resource.get("Condition") == "UseRdsProxy":
            assert parameters["EnableRdsProxy"] == "false"  # its condition is false: nothing to make
            continue
        properties = names.resolve(resource.get("Properties", {}))
        if kind == "AWS::ApiGatewayV2::VpcLink":
            names.refs[name] = gateway.create_vpc_link(**properties)["VpcLinkId"]
        elif kind == "AWS::ApiGatewayV2::Integration":
            names.refs[name] = gateway.create_integration(**properties)["IntegrationId"]
        elif kind == "AWS::ApiGatewayV2::Route":
            gateway.create_route(**properties)
        elif kind == "AWS::ApiGatewayV2::Stage":
            throttling = properties["DefaultRouteSettings"]
            throttling["ThrottlingRateLimit"] = float(throttling["ThrottlingRateLimit"])
            throttling["ThrottlingBurstLimit"] = int(throttling["ThrottlingBurstLimit"])
            gateway.create_stage(**properties)
        elif kind == "AWS::AutoScaling::ScalingPolicy":
            autoscaling.put_scaling_policy(PolicyName=name, **properties)
        elif kind == "AWS::CloudWatch::Alarm":
            cloudwatch.put_metric_alarm(**properties)
        else:
            assert kind == "AWS::SNS::Subscription" and resource["Condition"] == "SubscribeAlarmEmail"
            assert parameters["AlarmEmail"] == ""  # its condition is false: nothing to make
    yield MotoStack(moto_endpoint, template, physical, names, secret_arn, password, app_secret_arn, app_login)
    moto_post(moto_endpoint, "/moto-api/reset")


def test_moto_creates_the_auto_scaling_group(moto_stack: MotoStack) -> None:
    (group,) = moto_stack.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[moto_stack.physical["AutoScalingGroup"]]
    )["AutoScalingGroups"]
    assert group["AutoScalingGroupName"] == "productos-api-asg"
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (2, 10, 2)
    assert (group["HealthCheckType"], group["HealthCheckGracePeriod"]) == ("ELB", 300)
    assert group["TargetGroupARNs"] == [moto_stack.physical["TargetGroup"]]
    assert set(group["VPCZoneIdentifier"].split(",")) == {
        moto_stack.physical["PrivateSubnet1"],
        moto_stack.physical["PrivateSubnet2"],
    }
    assert group["LaunchTemplate"]["LaunchTemplateId"] == moto_stack.physical["LaunchTemplate"]
    assert len(group["Instances"]) == 2


def test_moto_creates_the_target_group_with_the_kits_health_check(moto_stack: MotoStack) -> None:
    """Every 5 s, out after 2 failures (the guide's is 30 s x 3: see test_the_stop_of_an_instance_fits_together)."""
    elbv2 = moto_stack.client("elbv2")
    (group,) = elbv2.describe_target_groups(TargetGroupArns=[moto_stack.physical["TargetGroup"]])["TargetGroups"]
    assert {k: group[k] for k in (
        "Protocol", "Port", "HealthCheckProtocol", "HealthCheckPath", "HealthCheckIntervalSeconds",
        "HealthCheckTimeoutSeconds", "HealthyThresholdCount", "UnhealthyThresholdCount", "Matcher",
    )} == {
        "Protocol": "HTTP", "Port": 8000, "HealthCheckProtocol": "HTTP", "HealthCheckPath": "/health",
        "HealthCheckIntervalSeconds": 5, "HealthCheckTimeoutSeconds": 4, "HealthyThresholdCount": 2,
        "UnhealthyThresholdCount": 2, "Matcher": {"HttpCode": "200"},
    }  # fmt: skip
    (balancer,) = elbv2.describe_load_balancers(LoadBalancerArns=[moto_stack.physical["LoadBalancer"]])["LoadBalancers"]
    assert balancer["Scheme"] == "internal"
    (listener,) = elbv2.describe_listeners(LoadBalancerArn=moto_stack.physical["LoadBalancer"])["Listeners"]
    assert (listener["Port"], listener["Protocol"]) == (443, "HTTPS")
    assert listener["DefaultActions"][0]["TargetGroupArn"] == moto_stack.physical["TargetGroup"]
    rules = [r for r in elbv2.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"] if not r["IsDefault"]]
    (metrics,) = rules  # the encoded spellings' rule is not in moto: NOT_IN_MOTO_PROPERTIES
    assert metrics["RuleArn"] == moto_stack.physical["MetricsNotFoundRule"]
    assert metrics["Priority"] == "1"
    assert metrics["Conditions"][0]["Field"] == "path-pattern"
    assert metrics["Conditions"][0]["PathPatternConfig"]["Values"] == ["/metrics", "/metrics/*"]
    (action,) = metrics["Actions"]
    assert action["Type"] == "fixed-response" and action["FixedResponseConfig"]["StatusCode"] == "404"


def test_moto_creates_the_network_and_the_database(moto_stack: MotoStack) -> None:
    p = moto_stack.physical
    ec2 = moto_stack.client("ec2")
    groups = {g["GroupId"]: g for g in ec2.describe_security_groups(GroupIds=[
        p["VpcLinkSecurityGroup"], p["LoadBalancerSecurityGroup"], p["InstanceSecurityGroup"],
        p["DatabaseSecurityGroup"],
    ])["SecurityGroups"]}  # fmt: skip
    sources = {
        gid: sorted(
            (
                rule["FromPort"],
                *[r["CidrIp"] for r in rule["IpRanges"]],
                *[g["GroupId"] for g in rule["UserIdGroupPairs"]],
            )
            for rule in group["IpPermissions"]
        )
        for gid, group in groups.items()
    }
    assert sources == {
        p["VpcLinkSecurityGroup"]: [],
        p["LoadBalancerSecurityGroup"]: [(443, p["VpcLinkSecurityGroup"])],
        p["InstanceSecurityGroup"]: [(8000, p["LoadBalancerSecurityGroup"])],
        p["DatabaseSecurityGroup"]: [(5432, p["InstanceSecurityGroup"])],  # no proxy, no rule for one
    }
    # (moto's CloudFormation makes a group's SecurityGroupIngress, not its SecurityGroupEgress: the VPC link's
    # egress, HTTPS to the VPC only, is checked on the template.)
    routes = ec2.describe_route_tables(RouteTableIds=[p["PrivateRouteTable"]])["RouteTables"][0]["Routes"]
    assert any(r.get("NatGatewayId") == p["NatGateway"] for r in routes)
    zones = {
        s["AvailabilityZone"]
        for s in ec2.describe_subnets(SubnetIds=[p["PrivateSubnet1"], p["PrivateSubnet2"]])["Subnets"]
    }
    assert len(zones) == 2

    (db,) = moto_stack.client("rds").describe_db_instances(DBInstanceIdentifier=p["Database"])["DBInstances"]
    assert (db["Engine"], db["MultiAZ"], db["StorageEncrypted"], db["BackupRetentionPeriod"]) == (
        "postgres",
        True,
        True,
        7,
    )
    assert {s["SubnetIdentifier"] for s in db["DBSubnetGroup"]["Subnets"]} == {
        p["PrivateSubnet1"],
        p["PrivateSubnet2"],
    }
    ssm = moto_stack.client("ssm")
    direct = f"postgresql://{db['Endpoint']['Address']}:5432/productos?sslmode=require"
    # Without the proxy both logins go straight to the database, and nothing says DB_POOLER.
    for name in ("/productos-api/database-url", "/productos-api/database-migrate-url"):
        assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == direct
    stored = {parameter["Name"] for parameter in ssm.get_parameters_by_path(Path="/productos-api/")["Parameters"]}
    assert not stored & {"/productos-api/db-pooler", "/productos-api/db-iam-auth"}
    assert not set(p) & set(PROXY_RESOURCES)


@pytest.mark.usefixtures("no_settings")
async def test_moto_reads_back_the_policies_alarms_and_dashboard_of_productos_aws(
    moto_stack: MotoStack,
) -> None:
    options = cli_options(moto_stack.names)
    printed = await productos_aws("scaling-policies", *options)
    stored = moto_stack.client("autoscaling").describe_policies(
        AutoScalingGroupName=moto_stack.physical["AutoScalingGroup"]
    )["ScalingPolicies"]
    by_name = {p["PolicyName"]: p for p in stored}
    in_template = list(of_type(moto_stack.template, "AWS::AutoScaling::ScalingPolicy"))
    assert len(printed) == len(in_template) == len(stored) == 3
    for policy, logical_id in zip(printed, in_template, strict=True):
        back = by_name[logical_id]
        for key, value in policy.items():
            if key != "PolicyName":
                assert differences(value, back[key], key) == []

    printed = await productos_aws("alarms", *options)
    stored = moto_stack.client("cloudwatch").describe_alarms(AlarmNames=[a["AlarmName"] for a in printed])[
        "MetricAlarms"
    ]
    by_name = {a["AlarmName"]: a for a in stored}
    assert len(by_name) == len(printed) == 5
    for alarm in printed:
        back = by_name[alarm["AlarmName"]]
        back["Metrics"] = [{k: v for k, v in q.items() if k != "AccountId"} for q in back.get("Metrics", [])]
        assert differences(alarm, {key: back[key] for key in alarm}) == []

    printed = await productos_aws("dashboard", *options)
    back = moto_stack.client("cloudwatch").get_dashboard(DashboardName=printed["DashboardName"])
    assert differences(printed["DashboardBody"], json.loads(back["DashboardBody"])) == []


def test_moto_creates_the_api_with_its_throttling(moto_stack: MotoStack) -> None:
    gateway = moto_stack.client("apigatewayv2")
    api_id = moto_stack.names.refs["HttpApi"]
    (integration,) = gateway.get_integrations(ApiId=api_id)["Items"]
    # A private integration: the internal ALB's HTTPS listener, through the VPC link, its certificate checked.
    assert (integration["IntegrationType"], integration["ConnectionType"], integration["IntegrationUri"]) == (
        "HTTP_PROXY",
        "VPC_LINK",
        moto_stack.physical["HttpsListener"],
    )
    assert integration["TlsConfig"] == {"ServerNameToVerify": DOMAIN}
    link = gateway.get_vpc_link(VpcLinkId=integration["ConnectionId"])
    assert sorted(link["SubnetIds"]) == sorted(
        [moto_stack.physical["PrivateSubnet1"], moto_stack.physical["PrivateSubnet2"]]
    )
    assert link["SecurityGroupIds"] == [moto_stack.physical["VpcLinkSecurityGroup"]]
    (route,) = gateway.get_routes(ApiId=api_id)["Items"]
    assert (route["RouteKey"], route["Target"]) == (
        "$default",
        f"integrations/{integration['IntegrationId']}",
    )
    stage = gateway.get_stage(ApiId=api_id, StageName="$default")
    assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] == 100
    assert stage["DefaultRouteSettings"]["ThrottlingBurstLimit"] == 200


# --- User Data, run as an instance would, then the service's settings from what it wrote --------------------


@pytest.mark.usefixtures("no_settings")
async def test_user_data_points_the_service_at_the_stacks_settings(
    moto_stack: MotoStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (version,) = moto_stack.client("ec2").describe_launch_template_versions(
        LaunchTemplateId=moto_stack.physical["LaunchTemplate"]
    )["LaunchTemplateVersions"]
    data = version["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    script = base64.b64decode(data["UserData"]).decode()
    assert script.startswith("#!/bin/bash\n")
    assert script.endswith(USER_DATA.read_text().partition("\n")[2])

    # A scratch root, and systemctl and the CloudWatch agent's control script as recorders.
    root = tmp_path / "root"
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    agent = root / "opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl"
    for recorder in (bin_dir / "systemctl", agent):
        recorder.parent.mkdir(parents=True, exist_ok=True)
        recorder.write_text(f'#!/bin/sh\necho "$(basename "$0") $*" >> {calls}\n')
        recorder.chmod(0o755)
    done = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "USER_DATA_ROOT": str(root)},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    agent_config = root / "opt/aws/amazon-cloudwatch-agent/etc/productos.json"
    assert calls.read_text().splitlines() == [
        f"amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s -c file:{agent_config}",
        "systemctl daemon-reload",
        "systemctl enable --now productos",
    ]
    (collected,) = json.loads(agent_config.read_text())["logs"]["logs_collected"]["files"]["collect_list"]
    assert collected["log_group_name"] == moto_stack.physical["AppLogGroup"] == "/productos-api/app"

    dropin = (root / "etc/systemd/system/productos.service.d/10-settings.conf").read_text()
    environment = dict(
        shlex.split(line.removeprefix("Environment="))[0].split("=", 1)
        for line in dropin.splitlines()
        if line.startswith("Environment=")
    )
    assert environment == {
        "AWS_REGION": REGION,
        "PRODUCTOS_SERVICE_NAME": "productos-api",
        "PRODUCTOS_SSM_PATH": "/productos-api/",
        "PRODUCTOS_SECRET_ID": moto_stack.app_secret_arn,
        "PRODUCTOS_MIGRATE_SECRET_ID": moto_stack.secret_arn,
        "PRODUCTOS_METRICS_PUBLISHER": "cloudwatch",
        "PRODUCTOS_CLOUDWATCH_NAMESPACE": "Productos",
    }
    assert moto_stack.password not in dropin and moto_stack.app_login["password"] not in dropin

    # The service, given that environment, finds its database in the stack's parameter and secret.
    for key, value in {
        **environment,
        "AWS_ENDPOINT_URL": moto_stack.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    resolved = await resolve_settings(env_file=None)
    (db,) = moto_stack.client("rds").describe_db_instances(DBInstanceIdentifier=moto_stack.physical["Database"])[
        "DBInstances"
    ]
    # The service logs in as its row-only login; migrations as the master user, the schema owner.
    endpoint = f"{db['Endpoint']['Address']}:5432/productos?sslmode=require"
    url = resolved.settings.database_url.get_secret_value()
    assert url == f"postgresql://productos_app:{moto_stack.app_login['password']}@{endpoint}"
    assert resolved.sources["database_url"] == (
        f"secretsmanager:{moto_stack.app_secret_arn}+ssm:/productos-api/database-url"
    )
    assert resolved.settings.database_migrate_url is not None
    migrate_url = resolved.settings.database_migrate_url.get_secret_value()
    assert migrate_url == f"postgresql://productos:{quote(moto_stack.password, safe='')}@{endpoint}"
    assert resolved.sources["database_migrate_url"] == (
        f"secretsmanager:{moto_stack.secret_arn}+ssm:/productos-api/database-migrate-url"
    )
    assert resolved.settings.db_pooler == "none" and resolved.settings.db_app_role == "auto"
    assert resolved.settings.metrics_publisher == "cloudwatch"
    # Pools sized for ten instances on one small database, from the stack's parameters, and what `productos
    # check` weighs them against.
    kit = generator()
    assert (resolved.settings.db_pool_size, resolved.settings.db_max_overflow) == (
        kit.POOL_SIZES.pool_size,
        kit.POOL_SIZES.max_overflow,
    )
    assert resolved.sources["db_pool_size"] == "ssm:/productos-api/db-pool-size"
    assert (resolved.settings.db_connection_budget, resolved.settings.asg_max_size) == (
        kit.DB_CONNECTION_BUDGET,
        kit.ASG_MAX,
    )
    assert resolved.sources["asg_max_size"] == "ssm:/productos-api/productos-asg-max-size"
