"""Entity ids: positive 64-bit integers (``BIGINT`` primary keys)."""

from __future__ import annotations

__all__ = ["ID_MAX", "is_valid_id"]

#: The largest id a ``BIGINT`` key can hold. Larger ids cannot exist: services answer them 404, never an overflow.
ID_MAX = 2**63 - 1


def is_valid_id(value: int) -> bool:
    """Whether ``value`` can be the id of a stored entity."""
    return 1 <= value <= ID_MAX
