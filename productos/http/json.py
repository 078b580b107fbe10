"""Compact JSON bodies, built without a response model's second validation pass."""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dump_json"]


def dump_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON; NaN and infinities are refused (``ValueError``), as JSON has none.

    Besides JSON's own types it encodes what orjson does (datetimes as ISO 8601, UUIDs, dataclasses, enums).
    orjson encodes it: a product in 0.1 µs, against 2-3 µs for the standard library's encoder. orjson would
    write NaN and infinities as ``null``, so a body with a ``null`` in it goes to the standard library's
    encoder, which refuses them; so does what orjson cannot encode (keys that are not strings, integers
    beyond 64 bits), which the standard library can.

    Raises:
        ValueError: a NaN or an infinity.
        TypeError: a value neither encoder knows.
    """
    try:
        body = orjson.dumps(value)
    except TypeError:
        body = b"null"
    if b"null" not in body:
        return body
    encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_as_orjson_would)
    return encoded.encode()


def _as_orjson_would(value: Any) -> Any:
    # The standard library's encoder, on a type only orjson knows: the same JSON as orjson's.
    return orjson.loads(orjson.dumps(value))
