"""Health probes for the ALB target group and for process supervisors."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from productos.domain.errors import DatabaseUnavailableError
from productos.http.drain import Drain
from productos.runtime.deps import RuntimeDep

__all__ = ["HealthStatus", "LivenessStatus", "router"]

router = APIRouter(tags=["health"])


class HealthStatus(BaseModel):
    """The body of ``GET /health`` (readiness). Fields may be added, each optional: clients ignore what they do not
    know."""

    status: Literal["healthy", "unhealthy", "draining"] = Field(
        description="healthy (200); unhealthy: the database did not answer in time (503); draining: the instance "
        "is leaving service after SIGTERM (503)"
    )
    service: str = Field(description="The service's name (PRODUCTOS_SERVICE_NAME)")
    database: Literal["connected", "unreachable"] | None = Field(
        None, description="Absent while draining: the database is not asked then"
    )
    replica: Literal["connected", "lagging", "unavailable"] | None = Field(
        None,
        description="The read replica (DATABASE_READ_URL) as its last background sample found it; absent when none "
        "is configured, and while draining. Readiness does not depend on it: reads go to the primary unless it is "
        "connected",
    )


class LivenessStatus(BaseModel):
    """The body of ``GET /health/live``: the process serves requests."""

    status: Literal["alive"]
    service: str


_HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": HealthStatus, "description": "Ready: the database answered within PRODUCTOS_HEALTH_TIMEOUT"},
    503: {
        "model": HealthStatus,
        "description": "Not ready: the database is unreachable, or the instance is draining",
        "headers": {"Retry-After": {"description": "Seconds before the next probe", "schema": {"type": "integer"}}},
    },
}


@router.get("/health", operation_id="health", responses=_HEALTH_RESPONSES)
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
    # The replica's state as sampled in the background: reported, never asked here, and never a reason for 503.
    replica = {} if runtime.replica is None else {"replica": runtime.replica.state}
    try:
        await runtime.health.ping(runtime.settings.health_timeout)
    except DatabaseUnavailableError:
        return JSONResponse(
            {"status": "unhealthy", "service": service, "database": "unreachable", **replica},
            status_code=503,
            headers={"Cache-Control": "no-store", "Retry-After": "1"},
        )
    return JSONResponse(
        {"status": "healthy", "service": service, "database": "connected", **replica},
        headers={"Cache-Control": "no-store"},
    )


@router.get("/health/live", operation_id="health_live", responses={200: {"model": LivenessStatus}})
async def liveness(runtime: RuntimeDep) -> JSONResponse:
    """Liveness: the process serves requests. Never touches the database."""
    return JSONResponse(
        {"status": "alive", "service": runtime.settings.service_name}, headers={"Cache-Control": "no-store"}
    )
