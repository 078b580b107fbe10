"""``create_service``: a FastAPI app on the productos runtime, with the production edge every service shares."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from productos.http.errors import UnhandledErrorMiddleware, install_error_handlers
from productos.http.limits import ConcurrencyLimitMiddleware
from productos.http.metrics import router as metrics_router
from productos.http.middleware import BodySizeLimitMiddleware
from productos.infra.db.migrate import Migrations
from productos.observability.logging import configure_logging
from productos.observability.middleware import RequestContextMiddleware
from productos.observability.telemetry import Telemetry, open_telemetry
from productos.runtime.bootstrap import Runtime, open_runtime
from productos.runtime.health import router as health_router
from productos.runtime.settings_loader import ResolvedSettings, open_settings
from productos.settings import Settings

__all__ = ["RUNTIME", "StateBuilder", "create_service"]

logger = logging.getLogger(__name__)

#: Lifespan-state key of the ``Runtime`` (``request.state.runtime``).
RUNTIME = "runtime"

# Recent FastAPI (0.165 here) traces and measures each request itself once a global OpenTelemetry provider is
# set, as productos sets one. RequestContextMiddleware already does, once: FastAPI's would time it again.
_FASTAPI_TELEMETRY_OFF: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI).parameters
    else {}
)

#: Builds a service's own objects (use cases, repositories) from the runtime; they join the lifespan state,
#: so ``request.state.<key>`` reaches them.
StateBuilder = Callable[[Runtime], Mapping[str, Any]]


def create_service(
    *,
    title: str,
    routers: Sequence[APIRouter] = (),
    settings: Settings | None = None,
    migrations: Sequence[Migrations] = (),
    state: StateBuilder | None = None,
    description: str = "",
    version: str = "0.1.0",
) -> FastAPI:
    """Build a FastAPI service on the productos runtime.

    Every service gets the same production edge: settings from the environment, ``.env``, SSM and Secrets
    Manager (loaded in each worker at start, never at import); one engine and pool per process; ``/health``,
    ``/health/live`` and ``/metrics``; JSON logs, metrics and traces for every request and query; bad input as
    4xx with a ``detail``; request bodies bounded; CloudWatch publishing when configured.

    Args:
        title: the OpenAPI title, also the welcome message's name.
        routers: the service's routes.
        settings: explicit settings; when omitted they are loaded when the app starts.
        migrations: the service's Alembic migrations, applied at start on the embedded SQLite database
            (``productos migrate --script-location ... --version-table ...`` applies them elsewhere).
        state: builds the service's own objects from the runtime (see ``StateBuilder``).
        description: the OpenAPI description.
        version: the OpenAPI version.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            if settings is not None:
                resolved = ResolvedSettings(settings, {})
            else:
                resolved = await stack.enter_async_context(open_settings())
                if resolved.sources.get("service_name") == "default":
                    # A service is named after its title unless PRODUCTOS_SERVICE_NAME says otherwise.
                    named = resolved.settings.model_copy(update={"service_name": title})
                    resolved = dataclasses.replace(resolved, settings=named)
            configure_logging(resolved.settings.log_level, resolved.settings.log_format)
            # Telemetry per worker, after gunicorn's fork: its exporters run threads. Entered first so it is
            # closed last, and exports everything the runtime's shutdown does.
            telemetry = await stack.enter_async_context(open_telemetry(resolved.settings))
            runtime = await stack.enter_async_context(open_runtime(resolved, migrations=migrations))
            telemetry.instrument_engine(runtime.engine)
            service_name = runtime.settings.service_name
            logger.info("started", extra={"service": service_name})
            yield {
                RUNTIME: runtime,
                BodySizeLimitMiddleware.STATE_KEY: runtime.settings.max_body_size,
                ConcurrencyLimitMiddleware.STATE_KEY: runtime.settings.max_concurrent_requests,
                Telemetry.STATE_KEY: telemetry,
                **(state(runtime) if state is not None else {}),
            }
        logger.info("stopped", extra={"service": service_name})

    app = FastAPI(
        title=title,
        version=version,
        description=description,
        lifespan=lifespan,
        redirect_slashes=False,
        **_FASTAPI_TELEMETRY_OFF,
    )
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(metrics_router)
    for router in routers:
        app.include_router(router)

    @app.get("/", tags=["meta"])
    async def root() -> JSONResponse:
        """Welcome message."""
        return JSONResponse({"message": f"Bienvenido a {title}", "docs": "/docs", "health": "/health"})

    app.add_middleware(BodySizeLimitMiddleware)
    # Inside the request context: a refused request is measured, logged and carries X-Request-ID too.
    app.add_middleware(ConcurrencyLimitMiddleware)
    # Just inside the request context: a 500 carries X-Request-ID, its log line the request and trace ids.
    app.add_middleware(UnhandledErrorMiddleware)
    app.add_middleware(RequestContextMiddleware)
    return app
