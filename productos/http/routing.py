"""Route registration helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["both_slashes"]


def both_slashes(route: Callable[..., Any], path: str, **kwargs: Any) -> Callable[[Any], Any]:
    """Register ``path`` with and without a trailing slash, so clients need no redirect."""

    def decorator(endpoint: Any) -> Any:
        route(path + "/", include_in_schema=False, **kwargs)(endpoint)
        return route(path, **kwargs)(endpoint)

    return decorator
