"""OpenTelemetry's own environment variables, as its SDK documents them: the resource (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``service.version`` from the service), each signal's exporter
(``OTEL_TRACES_EXPORTER``, ``OTEL_METRICS_EXPORTER``), the sampler (``OTEL_TRACES_SAMPLER[_ARG]``), and whether
the machine is an EC2 instance.

What builds a tracer or meter provider runs in a fresh interpreter: OpenTelemetry allows one global provider per
process, and the first one built would stay for every later test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from productos.observability import telemetry
from productos.observability.telemetry import exporter_kind, on_ec2
from productos.settings import Settings
from productos.version import __version__

OTEL_VARIABLES = (
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS",
    "PRODUCTOS_SERVICE_NAME",
    "PRODUCTOS_OTEL_EXPORTER",
)


@pytest.fixture(autouse=True)
def no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def run(script: str, env: dict[str, str], tmp_path: Path) -> dict[str, object]:
    """Run ``script`` in a fresh interpreter with ``env`` added; the JSON of its last line of output."""
    clean = {k: v for k, v in os.environ.items() if k not in OTEL_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


#: Builds the worker's telemetry with a console span exporter (nothing is printed: no span ends) and prints the
#: tracer provider's resource.
RESOURCE = """
    import json
    from productos.observability.telemetry import build_telemetry
    from productos.settings import Settings

    telemetry = build_telemetry(
        Settings(service_name="facturas-api", otel_exporter="console", metrics_enabled=False),
        service_version="3.1.4",
    )
    print(json.dumps(dict(telemetry.tracing.provider.resource.attributes)))
"""


def test_the_resource_names_the_service_and_its_version_not_the_librarys(tmp_path: Path) -> None:
    resource = run(RESOURCE, {}, tmp_path)
    assert resource["service.name"] == "facturas-api"
    assert resource["service.version"] == "3.1.4"  # the service's (create_service's version)
    assert (resource["telemetry.distro.name"], resource["telemetry.distro.version"]) == ("productos", __version__)
    assert resource["telemetry.sdk.name"] == "opentelemetry"
    assert isinstance(resource["process.pid"], int) and resource["service.instance.id"]


def test_otel_service_name_and_resource_attributes_win(tmp_path: Path) -> None:
    env = {
        "OTEL_SERVICE_NAME": "from-otel-service-name",
        "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes,service.version=9.9,deployment.environment.name=prod",
    }
    resource = run(RESOURCE, env, tmp_path)
    # OTEL_SERVICE_NAME wins over OTEL_RESOURCE_ATTRIBUTES, which wins over what productos sets.
    assert resource["service.name"] == "from-otel-service-name"
    assert resource["service.version"] == "9.9"
    assert resource["deployment.environment.name"] == "prod"
    alone = run(RESOURCE, {"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes"}, tmp_path)
    assert alone["service.name"] == "from-attributes" and alone["service.version"] == "3.1.4"


def test_without_a_service_version_the_resource_has_none(tmp_path: Path) -> None:
    script = RESOURCE.replace('service_version="3.1.4"', "service_version=None")
    assert "service.version" not in run(script, {}, tmp_path)


def test_each_signal_has_its_exporter_from_otel_variables_first(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (exporter_kind(Settings(), "traces"), exporter_kind(Settings(), "metrics")) == ("none", "none")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "Console")  # case-insensitive, as OpenTelemetry's enumerations
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    settings = Settings(otel_exporter="otlp")
    assert (settings.otel_traces_exporter, settings.otel_metrics_exporter) == ("console", "prometheus")
    # The signal's own variable wins over PRODUCTOS_OTEL_EXPORTER; prometheus is /metrics only.
    assert (exporter_kind(settings, "traces"), exporter_kind(settings, "metrics")) == ("console", "none")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "")
    monkeypatch.delenv("OTEL_METRICS_EXPORTER")
    settings = Settings(otel_exporter="otlp")
    assert settings.otel_traces_exporter is None  # empty is unset
    assert (exporter_kind(settings, "traces"), exporter_kind(settings, "metrics")) == ("otlp", "otlp")
    with pytest.raises(ValidationError, match="otel_traces_exporter"):
        Settings(otel_traces_exporter="zipkin")


def test_a_signal_endpoint_makes_auto_export_that_signal_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces")
    settings = Settings(otel_exporter_otlp_endpoint="http://other:4318")
    assert (exporter_kind(settings, "traces"), exporter_kind(settings, "metrics")) == ("otlp", "otlp")
    # The exporter reads its signal's variable itself, which wins over OTEL_EXPORTER_OTLP_ENDPOINT.
    assert telemetry._otlp_endpoint(settings, "traces") is None
    assert telemetry._otlp_endpoint(settings, "metrics") == "http://other:4318"
    assert exporter_kind(Settings(), "metrics") == "none"


def test_the_sampler_comes_from_otel_traces_sampler(tmp_path: Path) -> None:
    script = """
        import json
        from productos.observability.telemetry import build_telemetry
        from productos.settings import Settings

        telemetry = build_telemetry(Settings(metrics_enabled=False))
        tracer = telemetry.tracing.tracer
        spans = [tracer.start_span(f"request {n}") for n in range(200)]
        print(json.dumps({"recorded": sum(span.is_recording() for span in spans)}))
    """
    exported = {"OTEL_TRACES_EXPORTER": "console"}
    assert run(script, exported, tmp_path) == {"recorded": 200}  # the SDK's default: parent-based always-on
    assert run(script, {**exported, "OTEL_TRACES_SAMPLER": "always_off"}, tmp_path) == {"recorded": 0}
    ratio = {**exported, "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}
    recorded = run(script, ratio, tmp_path)["recorded"]
    assert isinstance(recorded, int) and 20 < recorded < 90
    # Nothing exported: nothing recorded, whatever the sampler says (spans still carry ids for the logs).
    assert run(script, {"OTEL_TRACES_SAMPLER": "always_on"}, tmp_path) == {"recorded": 0}


def test_a_missing_otlp_extra_names_the_otel_variable_that_asked_for_it(tmp_path: Path) -> None:
    script = """
        import json, sys
        sys.modules["opentelemetry.exporter.otlp.proto.http"] = None
        from productos.domain.errors import ConfigurationError
        from productos.observability.telemetry import build_telemetry
        from productos.settings import Settings

        try:
            build_telemetry(Settings())
        except ConfigurationError as exc:
            print(json.dumps({"error": str(exc)}))
    """
    error = str(run(script, {"OTEL_METRICS_EXPORTER": "otlp"}, tmp_path)["error"])
    assert error.startswith("OTEL_METRICS_EXPORTER=otlp needs the 'otlp' extra") and "pip install" in error


def _sysfs(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("files", "ec2"),
    [
        ({"devices/virtual/dmi/id/sys_vendor": "Amazon EC2"}, True),  # Nitro
        ({"devices/virtual/dmi/id/board_asset_tag": "i-0123456789abcdef0"}, True),  # Nitro
        ({"hypervisor/uuid": "ec2e1916-9099-7caf-fd21-012345abcdef"}, True),  # Xen
        ({"hypervisor/uuid": "EC2E1916-9099-7CAF-FD21-012345ABCDEF"}, True),
        ({"devices/virtual/dmi/id/sys_vendor": "QEMU", "devices/virtual/dmi/id/board_asset_tag": ""}, False),
        ({"hypervisor/uuid": "4c4c4544-0043-3010-8052-b4c04f4e3332"}, False),
        ({}, False),  # a container without DMI
    ],
)
def test_on_ec2_reads_the_firmware_not_the_network(tmp_path: Path, files: dict[str, str], ec2: bool) -> None:
    assert on_ec2(_sysfs(tmp_path, files)) is ec2
