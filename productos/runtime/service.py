"""``create_service``: a FastAPI app on the productos runtime, with the production edge every service shares."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from productos.http.docs import DOCS_STATE_KEY, DOCS_URL, docs_enabled, install_docs
from productos.http.errors import SERVICE_ERROR_STATUSES, error_responses, install_error_handlers
from productos.http.limits import ConcurrencyLimitMiddleware
from productos.http.metrics import router as metrics_router
from productos.http.middleware import (
    BodySizeLimitMiddleware,
    EdgeConfig,
    EdgeMiddleware,
    TrustedProxyHeadersMiddleware,
)
from productos.http.read_your_writes import ReadYourWritesMiddleware
from productos.http.routing import include_routes, operation_id
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


class Welcome(BaseModel):
    """The body of ``GET /``."""

    message: str
    docs: str | None = Field(None, description="The documentation's path; absent when PRODUCTOS_DOCS_ENABLED=false")
    health: str


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
        version: the service's version: OpenAPI's, and ``service.version`` in its telemetry's resource.
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
            telemetry = await stack.enter_async_context(open_telemetry(resolved.settings, service_version=version))
            runtime = await stack.enter_async_context(open_runtime(resolved, migrations=migrations))
            # The pools by db.client.connection.pool.name: the primary's, and the read replica's when there is one.
            telemetry.instrument_engine(runtime.engine, pool_name="primary")
            if runtime.replica is not None:
                telemetry.instrument_engine(runtime.replica.engine, pool_name="replica")
            service_name = runtime.settings.service_name
            logger.info("started", extra={"service": service_name})
            yield {
                RUNTIME: runtime,
                EdgeMiddleware.STATE_KEY: EdgeConfig.from_settings(
                    runtime.settings, read_replica=runtime.replica is not None
                ),
                # Each setting under its own key too, for those middleware classes installed alone.
                BodySizeLimitMiddleware.STATE_KEY: runtime.settings.max_body_size,
                ConcurrencyLimitMiddleware.STATE_KEY: runtime.settings.max_concurrent_requests,
                DOCS_STATE_KEY: runtime.settings.docs_enabled,
                ReadYourWritesMiddleware.STATE_KEY: runtime.replica is not None,
                Telemetry.STATE_KEY: telemetry,
                TrustedProxyHeadersMiddleware.STATE_KEY: runtime.settings.trusted_proxies,
                **(state(runtime) if state is not None else {}),
            }
        logger.info("stopped", extra={"service": service_name})

    app = FastAPI(
        title=title,
        version=version,
        description=description,
        lifespan=lifespan,
        redirect_slashes=False,
        # OpenAPI: operation ids clients are generated from (``things_list``...), the edge's errors declared on
        # every operation, and the documentation routes added by install_docs (PRODUCTOS_DOCS_ENABLED).
        generate_unique_id_function=operation_id,
        responses=error_responses(*SERVICE_ERROR_STATUSES),
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        **_FASTAPI_TELEMETRY_OFF,
    )
    install_error_handlers(app)
    # The service's routes first, then the probes, then the documentation: a request is matched against the routes
    # in order, and each route passed costs FastAPI 8 Python calls (the four documentation routes, ahead of the
    # service's, cost GET /productos/{id} 32).
    for router in (*routers, health_router, metrics_router):
        include_routes(app, router)
    install_docs(app)

    @app.get("/", tags=["meta"], operation_id="root", responses={200: {"model": Welcome}})
    async def root(request: Request) -> JSONResponse:
        """Welcome message."""
        docs = {"docs": DOCS_URL} if docs_enabled(request) else {}
        return JSONResponse({"message": f"Bienvenido a {title}", **docs, "health": "/health"})

    # Inside the request context, in one layer: the client's address from trusted proxies, the bound on concurrent
    # requests, the body limit, read-your-writes and the 500 of an unhandled error. What it answers is measured,
    # logged and carries X-Request-ID; a 500's log line has the request and trace ids.
    app.add_middleware(EdgeMiddleware)
    app.add_middleware(RequestContextMiddleware)
    return app
