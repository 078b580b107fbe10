"""Health probes for the ALB target group and for process supervisors."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from productos.domain.errors import DatabaseUnavailableError
from productos.http.drain import Drain
from productos.runtime.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/health", responses={503: {"description": "The database is unreachable, or the instance is draining"}})
async def health(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """Readiness: the database answers within the health timeout (the ALB's check gets an answer in < 5 s)."""
    service = runtime.settings.service_name
    drain: Drain | None = getattr(request.state, Drain.STATE_KEY, None)
    if drain is not None and not drain.ready:
        # SIGTERM: the balancer must stop sending here, whatever the database says; answered at once.
        return JSONResponse(
            {"status": "draining", "service": service},
            status_code=503,
            headers={"Cache-Control": "no-store", "Retry-After": "1"},
        )
    try:
        await runtime.health.ping(runtime.settings.health_timeout)
    except DatabaseUnavailableError:
        return JSONResponse(
            {"status": "unhealthy", "service": service, "database": "unreachable"},
            status_code=503,
            headers={"Cache-Control": "no-store", "Retry-After": "1"},
        )
    return JSONResponse(
        {"status": "healthy", "service": service, "database": "connected"},
        headers={"Cache-Control": "no-store"},
    )


@router.get("/health/live")
async def liveness(runtime: RuntimeDep) -> JSONResponse:
    """Liveness: the process serves requests. Never touches the database."""
    return JSONResponse(
        {"status": "alive", "service": runtime.settings.service_name}, headers={"Cache-Control": "no-store"}
    )
