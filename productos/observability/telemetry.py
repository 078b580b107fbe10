"""One worker's telemetry: metrics, tracing and the access log's settings, opened in the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from productos.observability.logging import set_xray_trace_ids
from productos.observability.metrics import Metrics, multiprocess_dir
from productos.observability.proxies import TrustedProxies
from productos.observability.tracing import OTLP_SETTING, XRAY_SETTING, Tracing, create_tracing, missing_extra

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from productos.settings import Settings


@dataclass
class Telemetry:
    """What ``RequestContextMiddleware`` and the engine's instrumentation record to, for one process.

    Attributes:
        metrics: Prometheus (and OpenTelemetry) instruments; ``None`` when metrics are off.
        tracing: the tracer and propagator; ``None`` when tracing is off.
        trusted_proxies: whose X-Forwarded-For names the client in the access log.
        access_log: whether to write the access line (at info level, as ``productos.access``).
    """

    metrics: Metrics | None = None
    tracing: Tracing | None = None
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)
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


def exporter_kind(settings: Settings) -> str:
    """``PRODUCTOS_OTEL_EXPORTER``, with ``auto`` resolved: OTLP when an endpoint is configured, else none."""
    kind = settings.otel_exporter
    if kind == "auto":
        return "otlp" if settings.otel_exporter_otlp_endpoint else "none"
    return kind


def require_extras(settings: Settings) -> None:
    """Check that the optional exporters ``settings`` ask for are installed, before anything starts.

    Raises:
        ConfigurationError: naming the setting and the extra to install (``pip install 'productos[otlp]'``).
    """
    needs: list[tuple[str, str, tuple[str, ...]]] = []
    if exporter_kind(settings) == "otlp" and (settings.metrics_enabled or settings.tracing_enabled):
        needs.append((OTLP_SETTING, "otlp", ("opentelemetry.exporter.otlp.proto.http",)))
    if settings.xray and settings.tracing_enabled:
        needs.append((XRAY_SETTING, "xray", ("opentelemetry.propagators.aws", "opentelemetry.sdk.extension.aws")))
    for setting, extra, modules in needs:
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise missing_extra(setting, extra, exc) from exc


def _resource(settings: Settings) -> Resource:
    from opentelemetry.sdk.resources import Resource

    from productos.version import __version__

    # One instance per worker: each exports its own cumulative series, which a collector must not merge.
    return Resource.create(
        {
            "service.name": settings.service_name,
            "service.version": __version__,
            "service.instance.id": str(uuid.uuid4()),
            "process.pid": os.getpid(),
        }
    )


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


def build_telemetry(settings: Settings) -> Telemetry:
    """Create the worker's telemetry from ``settings``. Call it in the worker (after any fork), once.

    Raises:
        ConfigurationError: a setting asks for an exporter whose extra is not installed (see ``require_extras``).
    """
    require_extras(settings)
    set_xray_trace_ids(settings.xray)
    exporter = exporter_kind(settings)
    endpoint = settings.otel_exporter_otlp_endpoint
    telemetry = Telemetry(trusted_proxies=TrustedProxies(settings.trusted_proxies), access_log=settings.access_log)
    needs_resource = exporter != "none" and (settings.metrics_enabled or settings.tracing_enabled)
    resource = _resource(settings) if needs_resource else None
    if settings.metrics_enabled:
        meter = None
        if exporter != "none" and resource is not None:
            telemetry.meter_provider = _meter_provider(resource, exporter, endpoint)
            meter = telemetry.meter_provider.get_meter("productos")
        # Under gunicorn (multiprocess files), add up in the worker and write once a second.
        telemetry.metrics = Metrics(meter, batch=multiprocess_dir() is not None)
    if settings.tracing_enabled:
        if resource is None:
            from opentelemetry.sdk.resources import Resource

            resource = Resource.create({"service.name": settings.service_name})
        telemetry.tracing = create_tracing(resource, exporter=exporter, endpoint=endpoint, xray=settings.xray)
    return telemetry


@asynccontextmanager
async def open_telemetry(settings: Settings) -> AsyncIterator[Telemetry]:
    """The worker's telemetry for the app's life; on exit, pending spans and metrics are exported."""
    telemetry = build_telemetry(settings)
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
