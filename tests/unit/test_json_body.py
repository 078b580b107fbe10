"""dump_json: compact UTF-8 JSON bodies, NaN and infinities refused, whichever encoder writes them."""

from __future__ import annotations

import datetime
import json
import math
import uuid
from typing import Any

import pytest

from productos.http import dump_json

_PRODUCT = {
    "id": 7,
    "nombre": "Teclado mecánico",
    "descripcion": None,
    "precio": 49.99,
    "stock": 3,
    "created_at": "2026-11-29T19:28:07.851000+00:00",
    "version": 1,
}


@pytest.mark.parametrize(
    "value",
    [_PRODUCT, {**_PRODUCT, "descripcion": "sin nulos"}, [_PRODUCT] * 3, {"detail": "server busy"}, [], 0, "ñ"],
)
def test_the_body_is_the_standard_librarys_compact_json(value: Any) -> None:
    body = dump_json(value)
    assert json.loads(body) == value
    assert body == json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", ["alone", "nested", "beside a null"])
def test_nan_and_infinities_are_refused(bad: float, where: str) -> None:
    value: Any = {"alone": bad, "nested": {"a": [1, bad]}, "beside a null": {"x": None, "y": bad}}[where]
    with pytest.raises(ValueError):
        dump_json(value)


def test_what_only_one_encoder_knows_is_encoded_the_same_either_way() -> None:
    when = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)
    ident = uuid.UUID(int=5)
    for extra in ({}, {"null": None}):  # with a null, the standard library's encoder writes it
        assert json.loads(dump_json({"t": when, "u": ident, **extra})) == {
            "t": "2026-11-29T12:00:00+00:00",
            "u": "00000000-0000-0000-0000-000000000005",
            **extra,
        }
    assert json.loads(dump_json({1: "non-string key", "big": 2**70})) == {"1": "non-string key", "big": 2**70}
    with pytest.raises(TypeError):
        dump_json({"x": object()})
