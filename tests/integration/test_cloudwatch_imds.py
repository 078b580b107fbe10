"""The instance's identity through IMDSv2, against metadata services started here: one that answers, one that
never does, none at all; and the ASG's name from the Auto Scaling API (moto) when the tags are not exposed."""

from __future__ import annotations

import socket
import time
from typing import Any

import boto3
import pytest

from productos.infra.aws import AwsClients
from productos.infra.aws.imds import InstanceMetadata
from productos.observability.publishing import resolve_dimension_sets
from tests.integration.aws_fakes import FakeImds, imds_values
from tests.integration.conftest import REGION, Aws, free_port

INSTANCE = "i-0123456789abcdef0"


async def test_identity_token_first_then_the_id_and_the_asg_tag() -> None:
    with FakeImds(imds_values(INSTANCE, "productos-asg", "eu-west-1")) as imds:
        identity = await InstanceMetadata(imds.url).identity()
    assert identity is not None
    assert (identity.instance_id, identity.asg_name, identity.region) == (
        INSTANCE,
        "productos-asg",
        "eu-west-1",
    )
    assert imds.requests[0][:2] == ("PUT", "/latest/api/token")
    # IMDSv2 only: every GET carries the token.
    assert all(valid for method, _, valid in imds.requests if method == "GET")
    assert len([r for r in imds.requests if r[0] == "PUT"]) == 1  # one token for the lookups


async def test_the_endpoint_comes_from_botocores_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeImds(imds_values(INSTANCE, "asg-from-env")) as imds:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)
        monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
        assert await resolve_dimension_sets(None, metadata=InstanceMetadata()) == [
            (("AutoScalingGroupName", "asg-from-env"),),
            (("AutoScalingGroupName", "asg-from-env"), ("InstanceId", INSTANCE)),
        ]


async def test_the_setting_wins_over_the_tag() -> None:
    with FakeImds(imds_values(INSTANCE, "tagged-asg")) as imds:
        sets = await resolve_dimension_sets("configured-asg", metadata=InstanceMetadata(imds.url))
    assert sets[0] == (("AutoScalingGroupName", "configured-asg"),)
    assert sets[1] == (("AutoScalingGroupName", "configured-asg"), ("InstanceId", INSTANCE))


async def test_a_metadata_service_that_never_answers_costs_the_deadline_at_most() -> None:
    with FakeImds({}, silent=True) as imds:
        started = time.monotonic()
        identity = await InstanceMetadata(imds.url, timeout=0.3, attempts=2).identity(deadline=1.0)
        elapsed = time.monotonic() - started
    assert identity is None
    assert elapsed < 1.5


async def test_no_metadata_service_at_all_is_quick() -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    identity = await InstanceMetadata(f"http://127.0.0.1:{port}").identity()
    assert identity is None
    assert time.monotonic() - started < 1.0


async def test_a_blackholed_link_local_address_respects_the_deadline() -> None:
    # 169.254.169.254 off EC2: the connection attempt goes nowhere (or is refused); either way, bounded.
    started = time.monotonic()
    identity = await InstanceMetadata("http://169.254.169.254", timeout=0.2, attempts=1).identity(deadline=0.5)
    assert identity is None
    assert time.monotonic() - started < 1.0


async def test_metadata_disabled_asks_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeImds(imds_values(INSTANCE, "x")) as imds:
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        assert await InstanceMetadata(imds.url).identity() is None
        assert imds.requests == []


async def test_a_refused_token_means_no_identity_and_no_imdsv1_fallback() -> None:
    class NoTokens(FakeImds):
        pass

    with NoTokens(imds_values(INSTANCE, "x")) as imds:
        imds.token = ""  # an empty token: the service "answers" nothing usable
        identity = await InstanceMetadata(imds.url).identity()
    assert identity is None
    assert not any(method == "GET" and not valid for method, _, valid in imds.requests)


def _asg_with_instance(aws: Aws) -> tuple[str, str]:
    def client(service: str) -> Any:
        return boto3.client(
            service, region_name=REGION, endpoint_url=aws.endpoint,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip

    ec2, autoscaling = client("ec2"), client("autoscaling")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    ec2.create_launch_template(
        LaunchTemplateName="productos-lt", LaunchTemplateData={"ImageId": image, "InstanceType": "t3.small"}
    )
    zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="api-asg",
        LaunchTemplate={"LaunchTemplateName": "productos-lt"},
        MinSize=1, MaxSize=2, DesiredCapacity=1, AvailabilityZones=[zone],
    )  # fmt: skip
    instance = autoscaling.describe_auto_scaling_instances()["AutoScalingInstances"][0]["InstanceId"]
    return "api-asg", instance


async def test_without_metadata_tags_the_asg_comes_from_the_auto_scaling_api(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
    asg, instance = _asg_with_instance(aws)
    with FakeImds(imds_values(instance)) as imds:  # tags not exposed: the tag path is a 404
        async with AwsClients() as clients:

            async def autoscaling() -> Any:
                return await clients.client("autoscaling")

            sets = await resolve_dimension_sets(None, metadata=InstanceMetadata(imds.url), autoscaling=autoscaling)
    assert sets == [
        (("AutoScalingGroupName", asg),),
        (("AutoScalingGroupName", asg), ("InstanceId", instance)),
    ]


def test_free_port_is_closed() -> None:
    # The "nothing listens" test above relies on it.
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", free_port())) != 0
