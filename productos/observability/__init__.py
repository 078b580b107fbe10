"""Observability: JSON logging, request context, metrics (Prometheus and OpenTelemetry) and tracing."""

from productos.observability.logging import JsonFormatter, configure_logging, logging_config, request_id_var
from productos.observability.metrics import Metrics
from productos.observability.middleware import RequestContextMiddleware
from productos.observability.telemetry import Telemetry, build_telemetry, open_telemetry
from productos.observability.tracing import Tracing

__all__ = [
    "JsonFormatter",
    "Metrics",
    "RequestContextMiddleware",
    "Telemetry",
    "Tracing",
    "build_telemetry",
    "configure_logging",
    "logging_config",
    "open_telemetry",
    "request_id_var",
]
