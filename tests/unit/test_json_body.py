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


def test_datetimes_are_written_as_isoformat_writes_them_by_either_encoder() -> None:
    moments = [
        datetime.datetime(2026, 11, 29, 19, 28, 7, 851000, tzinfo=datetime.UTC),
        datetime.datetime(2026, 11, 29, 19, 28, 7, tzinfo=datetime.UTC),  # no microseconds: none written
        datetime.datetime(2026, 11, 29, 19, 28, 7, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
        datetime.datetime(2026, 1, 1),
        datetime.date(2026, 1, 2),
        datetime.time(1, 2, 3, 4),
    ]
    for extra in ({}, {"null": None}):
        assert json.loads(dump_json({"at": moments, **extra}))["at"] == [m.isoformat() for m in moments]


def test_a_caller_that_checked_its_floats_keeps_orjson_for_a_body_with_nulls() -> None:
    page = [{**_PRODUCT, "created_at": datetime.datetime(2026, 11, 29, 1, 2, 3, tzinfo=datetime.UTC)}] * 2
    body = dump_json(page, floats_finite=True)
    assert json.loads(body)[0]["descripcion"] is None
    assert json.loads(body)[0]["created_at"] == "2026-11-29T01:02:03+00:00"
    assert body == dump_json(page)  # the same bytes the standard library's path writes
    assert dump_json({"x": math.nan}, floats_finite=True) == b'{"x":null}'  # what the caller vouched against


def test_the_products_service_refuses_a_price_that_is_not_finite() -> None:
    from decimal import Decimal

    from productos.services.productos.domain import Producto
    from productos.services.productos.schemas import producto_dict

    when = datetime.datetime(2026, 11, 29, tzinfo=datetime.UTC)
    fields = {"id": 1, "nombre": "x", "descripcion": None, "stock": 0, "created_at": when, "updated_at": when}
    assert producto_dict(Producto(**fields, precio=Decimal("49.99"), version=1))["precio"] == 49.99
    with pytest.raises(ValueError, match="not a finite number"):
        producto_dict(Producto(**fields, precio=Decimal("NaN"), version=1))
