"""Health probes for the ALB target group and for process supervisors."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from productos.domain.errors import DatabaseUnavailableError
from productos.runtime.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/health", responses={503: {"description": "The database is unreachable"}})
async def health(runtime: RuntimeDep) -> JSONResponse:
    """Readiness: the database answers within the health timeout (the ALB's check gets an answer in < 5 s)."""
    service = runtime.settings.service_name
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
