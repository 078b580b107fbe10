"""HTTP request and response bodies. Validation here gives FastAPI's 422 ``detail`` list."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from math import isfinite
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema

from productos.services.productos.domain import (
    DESCRIPCION_MAX_LENGTH,
    NOMBRE_MAX_LENGTH,
    PRECIO_MAX,
    STOCK_MAX,
    NewProducto,
    Producto,
    ProductoPatch,
)

# The OpenAPI schemas say what the domain checks beyond the validators' own constraints (clients and schemathesis
# generate from them): no NUL (PostgreSQL text cannot hold it), a nombre that is not blank, a precio to the cent.
Nombre = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=NOMBRE_MAX_LENGTH),
    Field(json_schema_extra={"pattern": "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"}),
]
Descripcion = Annotated[
    str,
    StringConstraints(max_length=DESCRIPCION_MAX_LENGTH),
    Field(json_schema_extra={"pattern": "^[^\\u0000]*$"}),
]
Precio = Annotated[
    Decimal,
    Field(gt=0, le=PRECIO_MAX, max_digits=10, decimal_places=2, allow_inf_nan=False),
    # A JSON number exact to the cent (the contract; a numeric string is accepted too, undocumented).
    WithJsonSchema(
        {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": float(PRECIO_MAX),
            "multipleOf": 0.01,
            "examples": [19.99],
        },
        mode="validation",
    ),
]


def _not_bool(value: Any) -> Any:
    # Lax int validation turns JSON true into 1; the domain refuses booleans, so the edge does too.
    if isinstance(value, bool):
        raise ValueError("stock must be an integer, not a boolean")
    return value


# The bounds before the validator, which wraps them: after it, pydantic documents them as "ge"/"le", keys that
# JSON Schema does not know (clients and schemathesis saw no bounds).
Stock = Annotated[int, Field(ge=0, le=STOCK_MAX), BeforeValidator(_not_bool)]


def _absent_or_value(schema: dict[str, Any]) -> None:
    """Document an optional field without its ``null``, which the domain refuses (422).

    ``SkipJsonSchema[None]`` would say so too, but makes the field a union whose 422s name the member
    (``["body", "nombre", "constrained-str"]``).
    """
    if schema.get("default", ...) is None:
        del schema["default"]  # absent means unchanged, not null
    variants = [variant for variant in schema.pop("anyOf", ()) if variant != {"type": "null"}]
    if len(variants) == 1:
        schema.update(variants[0])
    elif variants:
        schema["anyOf"] = variants


class ProductoIn(BaseModel):
    """A full product, as POST and PUT take it."""

    model_config = ConfigDict(extra="ignore")

    nombre: Nombre
    descripcion: Descripcion | None = None
    precio: Precio
    stock: Stock = 0

    def to_domain(self) -> NewProducto:
        return NewProducto(nombre=self.nombre, descripcion=self.descripcion, precio=self.precio, stock=self.stock)


class ProductoPatchIn(BaseModel):
    """A partial update: only the fields present are changed."""

    model_config = ConfigDict(extra="ignore")

    # Absent: unchanged. null is refused (422) but for descripcion, which it clears.
    nombre: Nombre | None = Field(None, json_schema_extra=_absent_or_value)
    descripcion: Descripcion | None = None
    precio: Precio | None = Field(None, json_schema_extra=_absent_or_value)
    stock: Stock | None = Field(None, json_schema_extra=_absent_or_value)

    def to_domain(self) -> ProductoPatch:
        return ProductoPatch(self.model_dump(exclude_unset=True))


class ProductoOut(BaseModel):
    """A stored product. ``precio`` is a JSON number exact to the cent."""

    id: int
    nombre: str
    descripcion: str | None
    precio: float
    stock: int
    created_at: datetime
    updated_at: datetime
    version: int


def producto_dict(producto: Producto) -> dict[str, Any]:
    """``ProductoOut``'s fields for ``dump_json(..., floats_finite=True)``: ``precio`` checked finite (a NaN
    stored behind the API's back is refused, not written as ``null``), the timestamps left for the encoder to
    write in ISO 8601 as ``isoformat()`` does."""
    # NUMERIC(10, 2) has at most 10 significant digits, so the shortest float repr is the exact decimal.
    precio = float(producto.precio)
    if not isfinite(precio):
        raise ValueError(f"producto {producto.id}: precio {producto.precio} is not a finite number")
    return {
        "id": producto.id,
        "nombre": producto.nombre,
        "descripcion": producto.descripcion,
        "precio": precio,
        "stock": producto.stock,
        "created_at": producto.created_at,
        "updated_at": producto.updated_at,
        "version": producto.version,
    }
