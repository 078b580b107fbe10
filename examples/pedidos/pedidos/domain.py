"""Orders and their life cycle. No framework imports, as in productos' own domain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from productos.domain import ConflictError, DomainValidationError, is_valid_id

CANTIDAD_MAX = 10_000


class Estado(StrEnum):
    PENDIENTE = "pendiente"
    PAGADO = "pagado"
    ENVIADO = "enviado"
    CANCELADO = "cancelado"


_NEXT: dict[Estado, frozenset[Estado]] = {
    Estado.PENDIENTE: frozenset({Estado.PAGADO, Estado.CANCELADO}),
    Estado.PAGADO: frozenset({Estado.ENVIADO, Estado.CANCELADO}),
    Estado.ENVIADO: frozenset(),
    Estado.CANCELADO: frozenset(),
}


@dataclass(frozen=True, slots=True)
class NewPedido:
    producto_id: int
    cantidad: int

    def __post_init__(self) -> None:
        if not is_valid_id(self.producto_id):
            raise DomainValidationError("producto_id must be a product id (a positive 64-bit integer)")
        if not 1 <= self.cantidad <= CANTIDAD_MAX:
            raise DomainValidationError(f"cantidad must be between 1 and {CANTIDAD_MAX}")


@dataclass(frozen=True, slots=True)
class Pedido:
    id: int
    producto_id: int
    cantidad: int
    estado: Estado
    created_at: datetime
    updated_at: datetime


def check_transition(current: Estado, target: Estado) -> None:
    """Raise ``ConflictError`` unless an order in ``current`` may move to ``target``."""
    if target not in _NEXT[current]:
        raise ConflictError(f"a pedido in estado {current.value!r} cannot become {target.value!r}")
