"""One worker's telemetry: metrics, tracing and the access log's settings, opened in the app's lifespan.

OpenTelemetry's own environment variables work as its SDK documents them:

- ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` win over what productos puts in the resource: the
  service's name (``PRODUCTOS_SERVICE_NAME``, or the title given to ``create_service``), ``service.version``
  (the version given to ``create_service``: the service's, not the library's, which is
  ``telemetry.distro.version``), ``service.instance.id`` (one per worker) and ``process.pid``.
- ``OTEL_TRACES_EXPORTER`` and ``OTEL_METRICS_EXPORTER`` (``otlp``, ``console``, ``none``; ``prometheus`` for
  metrics means ``/metrics`` only) choose each signal's exporter; unset, ``PRODUCTOS_OTEL_EXPORTER`` does (by
  default OTLP when an OTLP endpoint is set, else none: unlike the SDK, nothing is sent to an endpoint nobody
  configured). The OTLP exporter reads its own ``OTEL_EXPORTER_OTLP_*`` variables.
- ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG`` choose the sampler when spans are exported.
- ``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS`` adds the SDK's resource detectors.

On EC2 the resource also carries the instance's ``cloud.*`` and ``host.*`` attributes, from the EC2 resource
detector of ``opentelemetry-sdk-extension-aws`` (the ``xray`` extra). It asks the instance metadata service,
so it runs only where the machine's firmware says it is an EC2 instance (``on_ec2``: a file read, no network),
and not at all with botocore's ``AWS_EC2_METADATA_DISABLED=true``: elsewhere start-up never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from productos.observability.logging import set_xray_trace_ids
from productos.observability.metrics import Metrics, multiprocess_dir
from productos.observability.tracing import OTLP_SETTING, XRAY_SETTING, Tracing, create_tracing, missing_extra

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from productos.settings import Settings

logger = logging.getLogger(__name__)

Signal = Literal["traces", "metrics"]

#: Where Linux shows what the firmware says of the machine.
SYSFS = Path("/sys")


@dataclass
class Telemetry:
    """What ``RequestContextMiddleware`` and the engine's instrumentation record to, for one process.

    Attributes:
        metrics: Prometheus (and OpenTelemetry) instruments; ``None`` when metrics are off.
        tracing: the tracer and propagator; ``None`` when tracing is off.
        access_log: whether to write the access line (at info level, as ``productos.access``).
        meter_provider: the OpenTelemetry meter provider, when metrics are exported.
    """

    metrics: Metrics | None = None
    tracing: Tracing | None = None
    access_log: bool = True
    meter_provider: MeterProvider | None = None

    #: Key of the telemetry in the lifespan state (``request.state.telemetry``).
    STATE_KEY = "telemetry"

    def instrument_engine(self, engine: AsyncEngine | Engine, *, pool_name: str | None = None) -> None:
        """Record the engine's queries (metrics and spans) and its pool's state (metrics)."""
        from productos.observability.db import instrument_engine

        instrument_engine(engine, metrics=self.metrics, tracing=self.tracing, pool_name=pool_name)

    def shutdown(self) -> None:
        """Export what is pending and stop the exporters' threads (blocks)."""
        if self.tracing is not None:
            self.tracing.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def exporter_kind(settings: Settings, signal: Signal = "traces") -> str:
    """The exporter of ``signal``: ``otlp``, ``console`` or ``none``.

    ``OTEL_TRACES_EXPORTER`` or ``OTEL_METRICS_EXPORTER`` when set (``prometheus`` is ``none``: ``/metrics``
    is always served); else ``PRODUCTOS_OTEL_EXPORTER``, whose ``auto`` is OTLP when an OTLP endpoint is
    configured (``OTEL_EXPORTER_OTLP_ENDPOINT``, or the signal's own ``OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT``),
    else none.
    """
    chosen = settings.otel_traces_exporter if signal == "traces" else settings.otel_metrics_exporter
    if chosen is not None:
        return "none" if chosen == "prometheus" else chosen
    kind = settings.otel_exporter
    if kind == "auto":
        return "otlp" if settings.otel_exporter_otlp_endpoint or _signal_endpoint(signal) else "none"
    return kind


def _signal_endpoint(signal: Signal) -> str | None:
    # The OTLP exporter's own variable, which it reads itself and which wins over OTEL_EXPORTER_OTLP_ENDPOINT.
    return os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or None


def _otlp_endpoint(settings: Settings, signal: Signal) -> str | None:
    """The base endpoint to give the OTLP exporter of ``signal`` (``None``: the exporter's own variables)."""
    return None if _signal_endpoint(signal) else settings.otel_exporter_otlp_endpoint


def _otlp_setting(settings: Settings, signal: Signal) -> str:
    """The setting that asked for OTLP, as the error for the missing extra names it."""
    chosen = settings.otel_traces_exporter if signal == "traces" else settings.otel_metrics_exporter
    return f"OTEL_{signal.upper()}_EXPORTER=otlp" if chosen == "otlp" else OTLP_SETTING


def require_extras(settings: Settings) -> None:
    """Check that the optional exporters ``settings`` ask for are installed, before anything starts.

    Raises:
        ConfigurationError: naming the setting and the extra to install (``pip install 'productos[otlp]'``).
    """
    needs: list[tuple[str, str, tuple[str, ...]]] = []
    signals: tuple[tuple[Signal, bool], ...] = (
        ("traces", settings.tracing_enabled),
        ("metrics", settings.metrics_enabled),
    )
    otlp = [signal for signal, enabled in signals if enabled and exporter_kind(settings, signal) == "otlp"]
    if otlp:
        needs.append((_otlp_setting(settings, otlp[0]), "otlp", ("opentelemetry.exporter.otlp.proto.http",)))
    if settings.xray and settings.tracing_enabled:
        needs.append((XRAY_SETTING, "xray", ("opentelemetry.propagators.aws", "opentelemetry.sdk.extension.aws")))
    for setting, extra, modules in needs:
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise missing_extra(setting, extra, exc) from exc


def on_ec2(sysfs: Path | None = None) -> bool:
    """Whether this machine is an EC2 instance, from what its firmware says (files of ``/sys``; no network).

    Nitro instances: DMI's system vendor is ``Amazon EC2`` and the board's asset tag is the instance id
    (``i-...``). Xen instances: the hypervisor's uuid starts with ``ec2``.

    Args:
        sysfs: where sysfs is mounted; ``SYSFS`` by default.
    """
    sysfs = sysfs or SYSFS
    dmi = sysfs / "devices" / "virtual" / "dmi" / "id"
    return (
        _first_line(dmi / "sys_vendor") == "Amazon EC2"
        or _first_line(dmi / "board_asset_tag").startswith("i-")
        or _first_line(sysfs / "hypervisor" / "uuid").lower().startswith("ec2")
    )


def _first_line(path: Path) -> str:
    try:
        with path.open(encoding="ascii", errors="replace") as file:
            return file.readline(256).strip()
    except OSError:
        return ""


def _sdk_runs_ec2_detector() -> bool:
    # OTEL_EXPERIMENTAL_RESOURCE_DETECTORS=aws_ec2 (or *, every detector installed): Resource.create runs it.
    names = {name.strip() for name in os.environ.get("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "").split(",")}
    return bool(names & {"aws_ec2", "*"})


def ec2_attributes(sysfs: Path | None = None) -> dict[str, Any]:
    """The instance's ``cloud.*`` and ``host.*`` resource attributes on EC2 (the EC2 resource detector of
    ``opentelemetry-sdk-extension-aws``); empty elsewhere, when the metadata service is disabled
    (``AWS_EC2_METADATA_DISABLED=true``), when the SDK runs the detector itself
    (``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS`` names ``aws_ec2`` or ``*``), or without the package.

    Args:
        sysfs: where sysfs is mounted (see ``on_ec2``).
    """
    from productos.infra.aws.imds import metadata_disabled

    if metadata_disabled() or _sdk_runs_ec2_detector() or not on_ec2(sysfs):
        return {}
    try:
        from opentelemetry.sdk.extension.aws.resource.ec2 import AwsEc2ResourceDetector
    except ImportError:
        logger.info(
            "on EC2, but opentelemetry-sdk-extension-aws is not installed: no cloud.* or host.* resource "
            "attributes (pip install 'productos[xray]')"
        )
        return {}
    # The detector waits at most 1 s for the metadata service's token; it logs and returns nothing on failure.
    return dict(AwsEc2ResourceDetector().detect().attributes)


def _resource(settings: Settings, service_version: str | None) -> Resource:
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource

    from productos.version import __version__

    attributes: dict[str, Any] = {
        "service.name": settings.service_name,
        # One instance per worker: each exports its own cumulative series, which a collector must not merge.
        "service.instance.id": str(uuid.uuid4()),
        "process.pid": os.getpid(),
        "telemetry.distro.name": "productos",
        "telemetry.distro.version": __version__,
    }
    if service_version:
        attributes["service.version"] = service_version
    attributes.update(ec2_attributes())
    # What OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME say wins over all of the above, as the SDK has it
    # (Resource.create would let the attributes given to it win over them).
    attributes.update(OTELResourceDetector().detect().attributes)
    return Resource.create(attributes)


def _meter_provider(resource: Resource, exporter: str, endpoint: str | None) -> MeterProvider:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricExporter,
        PeriodicExportingMetricReader,
    )

    metric_exporter: MetricExporter
    if exporter == "console":
        metric_exporter = ConsoleMetricExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        except ImportError as exc:
            raise missing_extra(OTLP_SETTING, "otlp", exc) from exc

        metric_exporter = OTLPMetricExporter(endpoint=f"{endpoint.rstrip('/')}/v1/metrics" if endpoint else None)
    # The export interval is OTEL_METRIC_EXPORT_INTERVAL (ms, 60 s by default).
    provider = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(metric_exporter)],
        resource=resource,
        shutdown_on_exit=False,
    )
    if type(otel_metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider":
        otel_metrics.set_meter_provider(provider)
    return provider


def build_telemetry(settings: Settings, *, service_version: str | None = None) -> Telemetry:
    """Create the worker's telemetry from ``settings``. Call it in the worker (after any fork), once.

    Args:
        settings: the service's settings.
        service_version: the service's version, the resource's ``service.version``
            (``OTEL_RESOURCE_ATTRIBUTES`` may say otherwise).

    Raises:
        ConfigurationError: a setting asks for an exporter whose extra is not installed (see ``require_extras``).
    """
    require_extras(settings)
    set_xray_trace_ids(settings.xray)
    traces = exporter_kind(settings, "traces") if settings.tracing_enabled else "none"
    metrics = exporter_kind(settings, "metrics") if settings.metrics_enabled else "none"
    telemetry = Telemetry(access_log=settings.access_log)
    resource = _resource(settings, service_version) if traces != "none" or metrics != "none" else None
    if settings.metrics_enabled:
        meter = None
        if metrics != "none" and resource is not None:
            telemetry.meter_provider = _meter_provider(resource, metrics, _otlp_endpoint(settings, "metrics"))
            meter = telemetry.meter_provider.get_meter("productos")
        # Under gunicorn (multiprocess files), add up in the worker and write once a second.
        telemetry.metrics = Metrics(meter, batch=multiprocess_dir() is not None)
    if settings.tracing_enabled:
        if resource is None:
            from opentelemetry.sdk.resources import Resource

            # Nothing is exported: the resource is never seen.
            resource = Resource.get_empty()
        endpoint = _otlp_endpoint(settings, "traces")
        telemetry.tracing = create_tracing(resource, exporter=traces, endpoint=endpoint, xray=settings.xray)
    return telemetry


@asynccontextmanager
async def open_telemetry(settings: Settings, *, service_version: str | None = None) -> AsyncIterator[Telemetry]:
    """The worker's telemetry for the app's life; on exit, pending spans and metrics are exported.

    Args:
        settings: the service's settings.
        service_version: the service's version (see ``build_telemetry``).
    """
    telemetry = build_telemetry(settings, service_version=service_version)
    flusher = None
    if telemetry.metrics is not None and telemetry.metrics.batch:
        flusher = asyncio.create_task(telemetry.metrics.flush_periodically(), name="productos-metrics-flush")
    try:
        yield telemetry
    finally:
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher  # its last flush
        # Exporting may wait on the network: not on the event loop.
        await asyncio.to_thread(telemetry.shutdown)
