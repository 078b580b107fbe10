"""The EC2 resource attributes (``cloud.*``, ``host.*``) of a worker's telemetry, from OpenTelemetry's EC2
resource detector against a metadata service started here (IMDSv2, over real HTTP).

The detector always asks ``http://169.254.169.254``; it reaches the metadata service started here through
``http_proxy``, which urllib honours. Each case runs in a fresh interpreter: the proxy is read when urllib first
opens a URL, and OpenTelemetry allows one global tracer provider per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.aws_fakes import FakeImds

INSTANCE = "i-0abc1234def567890"
IDENTITY = {
    "accountId": "123456789012",
    "region": "eu-west-1",
    "availabilityZone": "eu-west-1b",
    "instanceId": INSTANCE,
    "instanceType": "c7g.large",
    "imageId": "ami-0123456789abcdef0",
}
METADATA = {
    "/latest/dynamic/instance-identity/document": json.dumps(IDENTITY),
    "/latest/meta-data/hostname": "ip-10-0-1-23.eu-west-1.compute.internal",
}
EXPECTED = {
    "cloud.provider": "aws",
    "cloud.platform": "aws_ec2",
    "cloud.account.id": "123456789012",
    "cloud.region": "eu-west-1",
    "cloud.availability_zone": "eu-west-1b",
    "host.id": INSTANCE,
    "host.type": "c7g.large",
    "host.name": "ip-10-0-1-23.eu-west-1.compute.internal",
}

_SCRIPT = """
import json, sys, time
from pathlib import Path
from productos.observability import telemetry
from productos.settings import Settings

telemetry.SYSFS = Path(sys.argv[1])
settings = Settings(service_name="facturas-api", otel_exporter=sys.argv[2], metrics_enabled=False)
started = time.monotonic()
built = telemetry.build_telemetry(settings, service_version="2.0.1")
seconds = time.monotonic() - started
print(json.dumps({"resource": dict(built.tracing.provider.resource.attributes), "seconds": seconds}))
"""


def sysfs(tmp_path: Path, *, ec2: bool) -> Path:
    root = tmp_path / ("ec2-sys" if ec2 else "other-sys")
    dmi = root / "devices" / "virtual" / "dmi" / "id"
    dmi.mkdir(parents=True, exist_ok=True)
    (dmi / "sys_vendor").write_text("Amazon EC2\n" if ec2 else "QEMU\n")
    (dmi / "board_asset_tag").write_text(f"{INSTANCE}\n" if ec2 else "\n")
    return root


def build(
    imds: FakeImds, root: Path, tmp_path: Path, env: dict[str, str] | None = None, exporter: str = "console"
) -> dict[str, Any]:
    """Build a worker's telemetry, with the metadata service reached through ``http_proxy``: its resource's
    attributes (``resource``) and how long it took (``seconds``)."""
    base = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("OTEL_")}
    base.pop("AWS_EC2_METADATA_DISABLED", None)
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(root), exporter],
        cwd=tmp_path,
        env={**base, "http_proxy": imds.url, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    built: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return built


def resource(
    imds: FakeImds, root: Path, tmp_path: Path, env: dict[str, str] | None = None, exporter: str = "console"
) -> dict[str, object]:
    """The resource's attributes a worker builds (see ``build``)."""
    attributes: dict[str, object] = build(imds, root, tmp_path, env, exporter)["resource"]
    return attributes


def test_on_ec2_the_resource_carries_the_instances_cloud_and_host_attributes(tmp_path: Path) -> None:
    with FakeImds(METADATA) as imds:
        attributes = resource(imds, sysfs(tmp_path, ec2=True), tmp_path)
    assert {key: attributes.get(key) for key in EXPECTED} == EXPECTED
    assert (attributes["service.name"], attributes["service.version"]) == ("facturas-api", "2.0.1")
    # IMDSv2: a token first, then every GET with it.
    assert imds.requests[0][:2] == ("PUT", "/latest/api/token")
    assert [valid for method, _, valid in imds.requests if method == "GET"] == [True, True]


def test_otel_resource_attributes_win_over_the_detected_ones(tmp_path: Path) -> None:
    env = {"OTEL_RESOURCE_ATTRIBUTES": "host.name=api-1,cloud.region=eu-west-3"}
    with FakeImds(METADATA) as imds:
        attributes = resource(imds, sysfs(tmp_path, ec2=True), tmp_path, env)
    assert (attributes["host.name"], attributes["cloud.region"], attributes["host.id"]) == (
        "api-1",
        "eu-west-3",
        INSTANCE,
    )


def test_off_ec2_the_metadata_service_is_never_asked(tmp_path: Path) -> None:
    with FakeImds(METADATA) as imds:
        attributes = resource(imds, sysfs(tmp_path, ec2=False), tmp_path)
    assert imds.requests == []
    assert not [key for key in attributes if key.startswith(("cloud.", "host."))]


@pytest.mark.parametrize(
    ("env", "exporter"),
    [
        ({"AWS_EC2_METADATA_DISABLED": "true"}, "console"),  # botocore's switch
        ({}, "none"),  # nothing exported: no resource is built
    ],
)
def test_on_ec2_nothing_is_asked_when_disabled_or_nothing_is_exported(
    tmp_path: Path, env: dict[str, str], exporter: str
) -> None:
    with FakeImds(METADATA) as imds:
        attributes = resource(imds, sysfs(tmp_path, ec2=True), tmp_path, env, exporter)
    assert imds.requests == []
    assert "host.id" not in attributes


def test_the_sdks_own_detector_setting_runs_it_once(tmp_path: Path) -> None:
    """``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS=aws_ec2``: the SDK runs the detector, on EC2 or not; productos does
    not ask a second time."""
    env = {"OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "aws_ec2"}
    for ec2 in (True, False):
        with FakeImds(METADATA) as imds:
            attributes = resource(imds, sysfs(tmp_path, ec2=ec2), tmp_path, env)
        assert attributes["host.id"] == INSTANCE
        assert [method for method, _, _ in imds.requests].count("PUT") == 1


def test_a_metadata_service_that_never_answers_costs_about_a_second(tmp_path: Path) -> None:
    """The detector waits 1 s for the token, then gives up: the worker starts without the attributes."""
    with FakeImds(METADATA) as imds:
        answered = build(imds, sysfs(tmp_path, ec2=True), tmp_path)
    with FakeImds(METADATA, silent=True) as imds:
        silent = build(imds, sysfs(tmp_path, ec2=True), tmp_path)
    assert imds.requests == [("PUT", "/latest/api/token", False)]
    assert "host.id" not in silent["resource"] and silent["resource"]["service.name"] == "facturas-api"
    assert answered["seconds"] < 1 and 0.9 < silent["seconds"] < 3, (answered, silent)
