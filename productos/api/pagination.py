"""Keyset pagination at the HTTP edge, shared by every productos service: ``?after=<id>&limit=N`` and a
``Link: <...>; rel="next"`` header."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Query, Request

from productos.domain.models import ID_MAX
from productos.services.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

After = Annotated[int, Query(ge=0, le=ID_MAX, description="Return items with id > after")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"At most {MAX_PAGE_SIZE}")]
_PAGE_PARAMS = frozenset({"after", "limit"})
__all__ = ["DEFAULT_PAGE_SIZE", "After", "Limit", "both_slashes", "next_link"]


def next_link(request: Request, next_after: int | None, limit: int) -> dict[str, str]:
    """The ``Link`` header for the next page, or no header on the last page: this request's path and query,
    with ``after`` and ``limit`` set (last) and any other parameter kept as it came.

    Built from the parsed query, not ``request.url.include_query_params``: rebuilding and re-parsing the whole
    URL cost 70 µs, 8 % of a 50-row page.
    """
    if next_after is None:
        return {}
    kept = [(key, value) for key, value in request.query_params.multi_items() if key not in _PAGE_PARAMS]
    query = urlencode([*kept, ("after", next_after), ("limit", limit)])
    return {"Link": f'<{request.scope["path"]}?{query}>; rel="next"'}


def both_slashes(route: Callable[..., Any], path: str, **kwargs: Any) -> Callable[[Any], Any]:
    """Register ``path`` with and without a trailing slash, so clients need no redirect."""

    def decorator(endpoint: Any) -> Any:
        route(path + "/", include_in_schema=False, **kwargs)(endpoint)
        return route(path, **kwargs)(endpoint)

    return decorator
