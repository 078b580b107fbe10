"""Observability: JSON logging and request context."""

from productos.observability.logging import JsonFormatter, configure_logging, logging_config, request_id_var
from productos.observability.middleware import RequestContextMiddleware

__all__ = ["JsonFormatter", "RequestContextMiddleware", "configure_logging", "logging_config", "request_id_var"]
