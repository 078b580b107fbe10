"""Keyset pagination, from the use case to the HTTP edge.

Use cases fetch ``limit + 1`` rows after a cursor and make a ``Page`` of them (``page_of``); routes take
``?after=<id>&limit=<n>`` (``After``, ``Limit``) and answer a ``Link: <...>; rel="next"`` header
(``next_link``). Page 10,000 costs what page 1 costs: the primary-key index finds the start.
"""

from productos.domain.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, HasId, Page, clamp_limit, page_of
from productos.http.pagination import After, Limit, next_link

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "After",
    "HasId",
    "Limit",
    "Page",
    "clamp_limit",
    "next_link",
    "page_of",
]
