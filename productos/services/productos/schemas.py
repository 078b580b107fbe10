"""HTTP request and response bodies. Validation here gives FastAPI's 422 ``detail`` list."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from productos.services.productos.domain import (
    DESCRIPCION_MAX_LENGTH,
    NOMBRE_MAX_LENGTH,
    PRECIO_MAX,
    STOCK_MAX,
    NewProducto,
    Producto,
    ProductoPatch,
)

Nombre = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=NOMBRE_MAX_LENGTH)]
Descripcion = Annotated[str, StringConstraints(max_length=DESCRIPCION_MAX_LENGTH)]
Precio = Annotated[
    Decimal,
    Field(gt=0, le=PRECIO_MAX, max_digits=10, decimal_places=2, allow_inf_nan=False, examples=[19.99]),
]


def _not_bool(value: Any) -> Any:
    # Lax int validation turns JSON true into 1; the domain refuses booleans, so the edge does too.
    if isinstance(value, bool):
        raise ValueError("stock must be an integer, not a boolean")
    return value


Stock = Annotated[int, BeforeValidator(_not_bool), Field(ge=0, le=STOCK_MAX)]


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

    nombre: Nombre | None = None
    descripcion: Descripcion | None = None
    precio: Precio | None = None
    stock: Stock | None = None

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
    return {
        "id": producto.id,
        "nombre": producto.nombre,
        "descripcion": producto.descripcion,
        # NUMERIC(10, 2) has at most 10 significant digits, so the shortest float repr is the exact decimal.
        "precio": float(producto.precio),
        "stock": producto.stock,
        "created_at": producto.created_at.isoformat(),
        "updated_at": producto.updated_at.isoformat(),
        "version": producto.version,
    }
