"""Invariants of the product entity: construction validates, nothing invalid reaches a repository."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from productos.domain import ID_MAX, is_valid_id
from productos.domain.errors import DomainValidationError, ProductosError
from productos.services.productos.domain import (
    DESCRIPCION_MAX_LENGTH,
    NOMBRE_MAX_LENGTH,
    PRECIO_MAX,
    STOCK_MAX,
    NewProducto,
    ProductoPatch,
    validate_precio,
)


def test_domain_validation_error_is_a_value_error_and_a_productos_error() -> None:
    assert issubclass(DomainValidationError, ValueError)
    assert issubclass(DomainValidationError, ProductosError)


# --- precio ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (Decimal("0.01"), "0.01"),
        (Decimal("19.99"), "19.99"),
        (Decimal("99999999.99"), "99999999.99"),
        (Decimal("1.5"), "1.50"),
        (Decimal("1.000"), "1.00"),  # trailing zeros are exact
        (Decimal("1E+2"), "100.00"),
        (5, "5.00"),
        ("19.99", "19.99"),
    ],
)
def test_valid_precio_is_quantized_to_the_cent(raw: Any, expected: str) -> None:
    result = validate_precio(raw)
    assert isinstance(result, Decimal)
    assert str(result) == expected


@pytest.mark.parametrize(
    "raw",
    [
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        Decimal("-Infinity"),
        "nan",
        "inf",
        "1e309",
        Decimal("1e309"),
        Decimal(0),
        Decimal("0.00"),
        Decimal("-0"),
        Decimal(-1),
        Decimal("-0.01"),
        Decimal("0.001"),
        Decimal("1.001"),
        Decimal("1.005"),
        Decimal("19.999"),
        Decimal("1e-999999"),
        PRECIO_MAX + Decimal("0.01"),
        Decimal("100000000"),
        Decimal("1e20"),
        "abc",
        "",
        None,
        [],
        19.99,  # a float is never exact: the caller must say which decimal it means
        float("nan"),
        True,
        False,
    ],
)
def test_invalid_precio_is_refused(raw: Any) -> None:
    with pytest.raises(DomainValidationError, match="precio"):
        validate_precio(raw)


def test_precio_error_says_what_to_fix() -> None:
    with pytest.raises(DomainValidationError, match="2 decimal places"):
        validate_precio(Decimal("1.001"))
    with pytest.raises(DomainValidationError, match="greater than 0"):
        validate_precio(Decimal(0))
    with pytest.raises(DomainValidationError, match=r"at most 99999999\.99"):
        validate_precio(Decimal("1e20"))


# --- NewProducto -----------------------------------------------------------------------------------------


def test_new_producto_normalises_its_fields() -> None:
    producto = NewProducto(nombre="  Mesa \n", precio=Decimal("7.5"), descripcion="  Roble  ")
    assert producto.nombre == "Mesa"
    assert producto.precio == Decimal("7.50") and str(producto.precio) == "7.50"
    assert producto.descripcion == "  Roble  "  # free text is kept as written
    assert producto.stock == 0


def test_new_producto_limits_are_inclusive() -> None:
    producto = NewProducto(
        nombre="n" * NOMBRE_MAX_LENGTH,
        precio=PRECIO_MAX,
        descripcion="d" * DESCRIPCION_MAX_LENGTH,
        stock=STOCK_MAX,
    )
    assert len(producto.nombre) == NOMBRE_MAX_LENGTH
    assert producto.stock == STOCK_MAX


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"nombre": ""}, "nombre"),
        ({"nombre": "   "}, "nombre"),
        ({"nombre": "n" * (NOMBRE_MAX_LENGTH + 1)}, "nombre"),
        ({"nombre": "n" * 10_000}, "nombre"),
        ({"nombre": None}, "nombre"),
        ({"nombre": 123}, "nombre"),
        ({"nombre": "a\x00b"}, "nombre"),  # PostgreSQL text cannot hold NUL
        ({"descripcion": "d" * (DESCRIPCION_MAX_LENGTH + 1)}, "descripcion"),
        ({"descripcion": 5}, "descripcion"),
        ({"descripcion": "x\x00"}, "descripcion"),
        ({"precio": Decimal("NaN")}, "precio"),
        ({"precio": Decimal(0)}, "precio"),
        ({"stock": -1}, "stock"),
        ({"stock": STOCK_MAX + 1}, "stock"),
        ({"stock": True}, "stock"),
        ({"stock": False}, "stock"),
        ({"stock": 1.0}, "stock"),
        ({"stock": "1"}, "stock"),
        ({"stock": None}, "stock"),
    ],
)
def test_new_producto_refuses_invalid_fields(fields: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {"nombre": "Mesa", "precio": Decimal("1.00"), **fields}
    with pytest.raises(DomainValidationError, match=field):
        NewProducto(**values)


def test_new_producto_error_does_not_echo_a_huge_input() -> None:
    with pytest.raises(DomainValidationError) as raised:
        NewProducto(nombre="n" * 10_000, precio=Decimal(1))
    assert len(str(raised.value)) < 200


def test_new_producto_is_immutable() -> None:
    producto = NewProducto(nombre="Mesa", precio=Decimal(1))
    with pytest.raises(AttributeError):
        producto.nombre = "Silla"  # type: ignore[misc]


# --- ProductoPatch ---------------------------------------------------------------------------------------


def test_patch_validates_and_normalises_only_given_fields() -> None:
    patch = ProductoPatch({"nombre": "  Silla ", "precio": Decimal("3.1")})
    assert patch.changes == {"nombre": "Silla", "precio": Decimal("3.10")}
    assert ProductoPatch().changes == {}


def test_patch_none_clears_descripcion() -> None:
    assert ProductoPatch({"descripcion": None}).changes == {"descripcion": None}


@pytest.mark.parametrize("field", ["nombre", "precio", "stock"])
def test_patch_refuses_null_for_required_fields(field: str) -> None:
    with pytest.raises(DomainValidationError, match=f"{field} must not be null"):
        ProductoPatch({field: None})


@pytest.mark.parametrize("field", ["id", "version", "created_at", "updated_at", "unknown"])
def test_patch_refuses_fields_that_cannot_change(field: str) -> None:
    with pytest.raises(DomainValidationError, match=f"{field} cannot be changed"):
        ProductoPatch({field: 1})


@pytest.mark.parametrize(
    "changes",
    [
        {"nombre": ""},
        {"nombre": "n" * (NOMBRE_MAX_LENGTH + 1)},
        {"nombre": 5},
        {"precio": Decimal("Infinity")},
        {"precio": Decimal("-1")},
        {"precio": Decimal("0.001")},
        {"precio": 1.5},
        {"precio": True},
        {"stock": True},
        {"stock": -5},
        {"descripcion": "d" * (DESCRIPCION_MAX_LENGTH + 1)},
    ],
)
def test_patch_applies_the_entity_invariants(changes: dict[str, object]) -> None:
    with pytest.raises(DomainValidationError):
        ProductoPatch(changes)


def test_replacing_patch_writes_every_field() -> None:
    producto = NewProducto(nombre="Mesa", precio=Decimal("2"), descripcion=None, stock=4)
    assert ProductoPatch.replacing(producto).changes == {
        "nombre": "Mesa",
        "descripcion": None,
        "precio": Decimal("2.00"),
        "stock": 4,
    }


# --- ids -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "valid"), [(0, False), (-1, False), (1, True), (ID_MAX, True), (ID_MAX + 1, False)])
def test_is_valid_id(value: int, valid: bool) -> None:
    assert is_valid_id(value) is valid
