"""Keyset pagination for use cases: fetch one row more than the page to know whether a next page exists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "HasId", "Page", "clamp_limit", "page_of"]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class HasId(Protocol):
    """An entity with an integer id, the keyset cursor."""

    @property
    def id(self) -> int: ...


T = TypeVar("T", bound=HasId)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of entities in id order."""

    items: Sequence[T]
    #: The ``after`` cursor of the next page, or ``None`` on the last page.
    next_after: int | None


def clamp_limit(limit: int) -> int:
    """``limit`` within 1..``MAX_PAGE_SIZE``."""
    return max(1, min(limit, MAX_PAGE_SIZE))


def page_of(rows: Sequence[T], limit: int) -> Page[T]:
    """The page from ``rows`` fetched with ``limit + 1``: no COUNT query needed."""
    items = rows[:limit]
    return Page(items=items, next_after=items[-1].id if len(rows) > limit else None)
