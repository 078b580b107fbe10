"""``GET /metrics``: the Prometheus exposition, every gunicorn worker of the instance merged."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from productos.observability.telemetry import Telemetry

router = APIRouter(tags=["meta"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text format; OpenMetrics when the scraper asks for it)."""
    telemetry: Telemetry | None = getattr(request.state, Telemetry.STATE_KEY, None)
    if telemetry is None or telemetry.metrics is None:
        return Response('{"detail":"Not Found"}', status_code=404, media_type="application/json")
    telemetry.metrics.flush()  # this worker's latest, batched figures
    # Merging the workers' files reads the disk: off the event loop.
    body, content_type = await asyncio.to_thread(telemetry.metrics.render, request.headers.get("accept"))
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})
