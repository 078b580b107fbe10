"""Keyset pagination at the HTTP edge, shared by every productos service: ``?after=<id>&limit=N`` and a
``Link: <...>; rel="next"`` header."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Query, Request

from productos.domain.models import ID_MAX
from productos.services.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

After = Annotated[int, Query(ge=0, le=ID_MAX, description="Return items with id > after")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"At most {MAX_PAGE_SIZE}")]
__all__ = ["DEFAULT_PAGE_SIZE", "After", "Limit", "both_slashes", "next_link"]


def next_link(request: Request, next_after: int | None, limit: int) -> dict[str, str]:
    """The ``Link`` header for the next page, or no header on the last page."""
    if next_after is None:
        return {}
    url = request.url.include_query_params(after=next_after, limit=limit)
    return {"Link": f'<{url.path}?{url.query}>; rel="next"'}


def both_slashes(route: Callable[..., Any], path: str, **kwargs: Any) -> Callable[[Any], Any]:
    """Register ``path`` with and without a trailing slash, so clients need no redirect."""

    def decorator(endpoint: Any) -> Any:
        route(path + "/", include_in_schema=False, **kwargs)(endpoint)
        return route(path, **kwargs)(endpoint)

    return decorator
