"""The FastAPI application factory."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from productos.api.errors import install_error_handlers
from productos.api.middleware import BodySizeLimitMiddleware
from productos.api.routes import health, metrics, productos
from productos.bootstrap import open_container
from productos.observability.logging import configure_logging
from productos.observability.middleware import RequestContextMiddleware
from productos.observability.telemetry import Telemetry, open_telemetry
from productos.settings import Settings, load_settings

logger = logging.getLogger("productos.app")

# Recent FastAPI (0.165 here) traces and measures each request itself once a global OpenTelemetry provider is
# set, as productos sets one. RequestContextMiddleware already does, once: FastAPI's would time it again.
_FASTAPI_TELEMETRY_OFF: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI).parameters
    else {}
)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the products service.

    Args:
        settings: the service's settings. When omitted they are loaded (``load_settings()``) when the app
            starts, in each worker: importing the app reads no configuration and opens no connection.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        resolved = settings or await load_settings()
        configure_logging(resolved.log_level)
        # Telemetry per worker, after gunicorn's fork: its exporters run threads. Closed last, so it exports
        # everything the container's shutdown does.
        async with open_telemetry(resolved) as telemetry, open_container(resolved) as container:
            telemetry.instrument_engine(container.engine)
            logger.info("started", extra={"service": resolved.service_name})
            yield {
                "container": container,
                BodySizeLimitMiddleware.STATE_KEY: resolved.max_body_size,
                Telemetry.STATE_KEY: telemetry,
            }
        logger.info("stopped", extra={"service": resolved.service_name})

    app = FastAPI(
        title="productos-api",
        version="0.1.0",
        description="Products API of productos: CRUD over async repositories, health probes.",
        lifespan=lifespan,
        redirect_slashes=False,
        **_FASTAPI_TELEMETRY_OFF,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(productos.router)
    app.include_router(metrics.router)

    @app.get("/", tags=["meta"])
    async def root() -> JSONResponse:
        """Welcome message."""
        return JSONResponse({"message": "Bienvenido a productos-api", "docs": "/docs", "health": "/health"})

    app.add_middleware(BodySizeLimitMiddleware)
    app.add_middleware(RequestContextMiddleware)
    return app
