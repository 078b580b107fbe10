"""The product entity and its invariants."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from productos.domain import DomainValidationError

NOMBRE_MAX_LENGTH = 200
DESCRIPCION_MAX_LENGTH = 5000
#: Prices are stored as NUMERIC(10, 2): at most 8 integer digits and 2 decimals.
PRECIO_MAX = Decimal("99999999.99")
PRECIO_MIN = Decimal("0.01")
STOCK_MAX = 2**31 - 1
#: Versions are stored as INTEGER and start at 1: no product can have a version outside 1..VERSION_MAX.
VERSION_MAX = 2**31 - 1
_CENT = Decimal("0.01")


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise DomainValidationError(f"{name} must be a string")
    # PostgreSQL text cannot hold NUL: refuse it here rather than fail in the driver (a 500).
    if "\x00" in value:
        raise DomainValidationError(f"{name} must not contain NUL characters")
    return value


def validate_nombre(nombre: str) -> str:
    """Return ``nombre`` stripped, or raise if it is empty or too long."""
    stripped = _check_text("nombre", nombre).strip()
    if not stripped:
        raise DomainValidationError("nombre must not be empty")
    if len(stripped) > NOMBRE_MAX_LENGTH:
        raise DomainValidationError(f"nombre must be at most {NOMBRE_MAX_LENGTH} characters")
    return stripped


def validate_descripcion(descripcion: str | None) -> str | None:
    if descripcion is None:
        return None
    if len(_check_text("descripcion", descripcion)) > DESCRIPCION_MAX_LENGTH:
        raise DomainValidationError(f"descripcion must be at most {DESCRIPCION_MAX_LENGTH} characters")
    return descripcion


def validate_precio(precio: Decimal | int | str) -> Decimal:
    """Return ``precio`` as a Decimal with two places, or raise.

    The price must be finite, exact to the cent (no rounding: 1.005 is refused), and within
    ``PRECIO_MIN``..``PRECIO_MAX`` so that it always fits its column.
    """
    if isinstance(precio, float):
        raise DomainValidationError("precio must be a Decimal, not a float")
    if isinstance(precio, bool):
        raise DomainValidationError("precio must be a number, not a boolean")
    try:
        value = Decimal(precio)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise DomainValidationError("precio must be a number") from exc
    if not value.is_finite():
        raise DomainValidationError("precio must be a finite number")
    if value <= 0:
        raise DomainValidationError("precio must be greater than 0")
    if value > PRECIO_MAX:
        raise DomainValidationError(f"precio must be at most {PRECIO_MAX}")
    if value != value.quantize(_CENT):
        raise DomainValidationError("precio must be exact to the cent (at most 2 decimal places)")
    return value.quantize(_CENT)


def validate_stock(stock: int) -> int:
    if isinstance(stock, bool) or not isinstance(stock, int):
        raise DomainValidationError("stock must be an integer")
    if stock < 0:
        raise DomainValidationError("stock must be >= 0")
    if stock > STOCK_MAX:
        raise DomainValidationError(f"stock must be at most {STOCK_MAX}")
    return stock


@dataclass(frozen=True, slots=True)
class NewProducto:
    """A product that has not been stored yet. Construction validates every field."""

    nombre: str
    precio: Decimal
    descripcion: str | None = None
    stock: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "nombre", validate_nombre(self.nombre))
        object.__setattr__(self, "descripcion", validate_descripcion(self.descripcion))
        object.__setattr__(self, "precio", validate_precio(self.precio))
        object.__setattr__(self, "stock", validate_stock(self.stock))


@dataclass(frozen=True, slots=True)
class ProductoPatch:
    """A partial update: only the fields in ``changes`` are written. ``None`` clears descripcion."""

    changes: dict[str, object] = field(default_factory=dict)

    _VALIDATORS: ClassVar[dict[str, Callable[[Any], object]]] = {
        "nombre": validate_nombre,
        "descripcion": validate_descripcion,
        "precio": validate_precio,
        "stock": validate_stock,
    }

    def __post_init__(self) -> None:
        validated: dict[str, object] = {}
        for name, value in self.changes.items():
            validator = self._VALIDATORS.get(name)
            if validator is None:
                raise DomainValidationError(f"{name} cannot be changed")
            if value is None and name != "descripcion":
                raise DomainValidationError(f"{name} must not be null")
            validated[name] = validator(value)
        object.__setattr__(self, "changes", validated)

    @classmethod
    def replacing(cls, producto: NewProducto) -> ProductoPatch:
        """A patch that writes every field, as PUT does."""
        return cls(
            {
                "nombre": producto.nombre,
                "descripcion": producto.descripcion,
                "precio": producto.precio,
                "stock": producto.stock,
            }
        )


@dataclass(frozen=True, slots=True)
class Producto:
    """A stored product. ``version`` increases by one on every update (optimistic concurrency)."""

    id: int
    nombre: str
    descripcion: str | None
    precio: Decimal
    stock: int
    created_at: datetime
    updated_at: datetime
    version: int = 1


__all__ = [
    "DESCRIPCION_MAX_LENGTH",
    "NOMBRE_MAX_LENGTH",
    "PRECIO_MAX",
    "PRECIO_MIN",
    "STOCK_MAX",
    "VERSION_MAX",
    "NewProducto",
    "Producto",
    "ProductoPatch",
]
