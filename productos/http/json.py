"""Compact JSON bodies, built without a response model's second validation pass."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dump_json"]


def dump_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON; NaN and infinities are refused (``ValueError``), as JSON has none."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
