"""``productos check``'s connection budget: the worst case at the Auto Scaling group's maximum against the
budget, read from the server by default, with the ASG's maximum from a setting or from the Auto Scaling API
(moto's server over HTTP); over the budget it fails, and says which setting fits."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import pytest

from tests.integration.conftest import REGION, Aws
from tests.integration.pg import scratch_database

pytestmark = pytest.mark.postgres

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
#: Settings of a pool that is the same wherever the test runs (WORKERS defaults to the machine's CPUs).
FLEET = {"WORKERS": "2", "PRODUCTOS_ASG_MAX_SIZE": "10", "DB_POOL_SIZE": "2", "DB_MAX_OVERFLOW": "2"}


@pytest.fixture(scope="module")
def migrated_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scratch_database(tmp_path_factory.mktemp("check-budget")) as url:
        yield url


def check(workdir: Path, database_url: str, **settings: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Run ``productos check --json`` with only these settings; (exit status, report, the budget step)."""
    names = ("DATABASE_URL", "PRODUCTOS_", "DB_", "WORKERS")
    env = {key: value for key, value in os.environ.items() if not key.startswith(names)}
    done = subprocess.run(
        [sys.executable, "-m", "productos", "check", "--json"],
        cwd=workdir, env={**env, "DATABASE_URL": database_url, **settings},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    report = json.loads(done.stdout)
    budget = next(step for step in report["checks"] if step["name"] == "budget")
    return done.returncode, report, budget


async def _server_slots(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return (
            int(await conn.fetchval("SHOW max_connections")),
            int(await conn.fetchval("SHOW superuser_reserved_connections")),
        )
    finally:
        await conn.close()


def test_a_worst_case_over_the_budget_fails_and_says_what_fits(tmp_path: Path, migrated_url: str) -> None:
    status, report, budget = check(tmp_path, migrated_url, **FLEET, DB_CONNECTION_BUDGET="50")
    assert status == 1 and report["verdict"] == "failed"
    assert not budget["ok"]
    assert (
        "worst case 10 instances x 2 workers x 4 connections = 80 (PRODUCTOS_ASG_MAX_SIZE); "
        "budget 50 (DB_CONNECTION_BUDGET): over the budget by 30"
    ) in budget["detail"]
    # 50 // (10 x 2) = 2 per worker.
    assert budget["hint"].startswith("DB_POOL_SIZE=2 with DB_MAX_OVERFLOW=0 fits")
    assert "DB_POOLER=transaction" in budget["hint"] and "RDS Proxy" in budget["hint"]
    # Every other step still passed: the budget alone failed the verdict.
    assert [step["name"] for step in report["checks"] if not step["ok"]] == ["budget"]


def test_a_worst_case_within_the_budget_passes(tmp_path: Path, migrated_url: str) -> None:
    status, report, budget = check(tmp_path, migrated_url, **FLEET, DB_CONNECTION_BUDGET="80")
    assert status == 0, report
    assert budget["ok"]
    assert budget["detail"] == (
        "worst case 10 instances x 2 workers x 4 connections = 80 (PRODUCTOS_ASG_MAX_SIZE); "
        "budget 80 (DB_CONNECTION_BUDGET)"
    )


def test_the_default_budget_is_what_the_server_allows(tmp_path: Path, migrated_url: str) -> None:
    max_connections, reserved = asyncio.run(_server_slots(migrated_url))
    available = max_connections - reserved
    server = f"budget {available} = max_connections {max_connections} - {reserved} reserved"

    # The library's default pools (4 + 4 per worker) on ten instances: over what one server allows.
    status, _, budget = check(tmp_path, migrated_url, WORKERS="2", PRODUCTOS_ASG_MAX_SIZE="10")
    assert status == 1 and not budget["ok"]
    assert "10 instances x 2 workers x 8 connections = 160" in budget["detail"] and server in budget["detail"]
    assert budget["hint"].startswith(f"DB_POOL_SIZE={available // 20} with DB_MAX_OVERFLOW=0 fits")

    # No Auto Scaling group known: one server, which fits.
    status, _, budget = check(tmp_path, migrated_url, WORKERS="1", DB_POOL_SIZE="2", DB_MAX_OVERFLOW="0")
    assert status == 0 and budget["ok"], budget
    assert budget["detail"].startswith("worst case 1 instance x 1 worker x 2 connections = 2 (no Auto Scaling group")
    assert server in budget["detail"]


def test_behind_a_transaction_pooler_the_pools_hold_the_poolers_connections(tmp_path: Path, migrated_url: str) -> None:
    status, _, budget = check(tmp_path, migrated_url, **FLEET, DB_CONNECTION_BUDGET="10", DB_POOLER="transaction")
    assert status == 0 and budget["ok"], budget
    assert "= 80" in budget["detail"] and "connections to the pooler (DB_POOLER=transaction)" in budget["detail"]


def test_the_asg_maximum_comes_from_the_auto_scaling_api(aws: Aws, tmp_path: Path, migrated_url: str) -> None:
    ec2, autoscaling = (
        boto3.client(service, region_name=REGION, endpoint_url=aws.endpoint, **CREDENTIALS)
        for service in ("ec2", "autoscaling")
    )
    image = ec2.describe_images()["Images"][0]["ImageId"]
    ec2.create_launch_template(
        LaunchTemplateName="budget-lt", LaunchTemplateData={"ImageId": image, "InstanceType": "t3.small"}
    )
    zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="budget-asg", LaunchTemplate={"LaunchTemplateName": "budget-lt"},
        MinSize=0, MaxSize=7, DesiredCapacity=0, AvailabilityZones=[zone],
    )  # fmt: skip
    fleet = {"WORKERS": "2", "DB_POOL_SIZE": "4", "DB_MAX_OVERFLOW": "0", "DB_CONNECTION_BUDGET": "60"}

    status, _, budget = check(tmp_path, migrated_url, **fleet, PRODUCTOS_ASG_NAME="budget-asg")
    assert status == 0 and budget["ok"], budget
    assert budget["detail"].startswith(
        "worst case 7 instances x 2 workers x 4 connections = 56 (the MaxSize of budget-asg)"
    )

    # A setting wins over the API; a group that does not exist fails the step, and says how to do without it.
    status, _, budget = check(
        tmp_path, migrated_url, **fleet, PRODUCTOS_ASG_NAME="budget-asg", PRODUCTOS_ASG_MAX_SIZE="8"
    )
    assert status == 1 and "8 instances x 2 workers x 4 connections = 64" in budget["detail"]
    status, _, budget = check(tmp_path, migrated_url, **fleet, PRODUCTOS_ASG_NAME="no-such-asg")
    assert status == 1 and not budget["ok"]
    assert "no Auto Scaling group 'no-such-asg'" in budget["detail"]
    assert "PRODUCTOS_ASG_MAX_SIZE" in budget["hint"]


def test_a_read_replica_on_the_same_server_doubles_the_pools_there(tmp_path: Path, migrated_url: str) -> None:
    status, _, budget = check(
        tmp_path, migrated_url, **FLEET, DB_CONNECTION_BUDGET="200", DATABASE_READ_URL=migrated_url
    )
    assert status == 0 and budget["ok"], budget
    assert "10 instances x 2 workers x 4 connections x 2 pools = 160" in budget["detail"]
    assert budget["detail"].endswith("DATABASE_READ_URL leads to the same server: its pools count here too")
    status, _, budget = check(
        tmp_path, migrated_url, **FLEET, DB_CONNECTION_BUDGET="150", DATABASE_READ_URL=migrated_url
    )
    assert status == 1 and budget["hint"].startswith("DB_POOL_SIZE=3 with DB_MAX_OVERFLOW=0 fits")
