"""HTTP routes of the orders service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from pedidos.domain import CANTIDAD_MAX, Estado, NewPedido, Pedido
from pedidos.service import PedidoService
from productos.domain import ID_MAX
from productos.http import both_slashes, error_responses
from productos.pagination import DEFAULT_PAGE_SIZE, After, Limit, next_link

router = APIRouter(tags=["pedidos"])


async def get_service(request: Request) -> PedidoService:
    service: PedidoService = request.state.pedidos
    return service


ServiceDep = Annotated[PedidoService, Depends(get_service)]


class PedidoIn(BaseModel):
    producto_id: int = Field(ge=1, le=ID_MAX)
    cantidad: int = Field(ge=1, le=CANTIDAD_MAX)


class EstadoIn(BaseModel):
    estado: Estado


class PedidoOut(BaseModel):
    id: int
    producto_id: int
    cantidad: int
    estado: Estado
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, pedido: Pedido) -> PedidoOut:
        return cls(
            id=pedido.id,
            producto_id=pedido.producto_id,
            cantidad=pedido.cantidad,
            estado=pedido.estado,
            created_at=pedido.created_at,
            updated_at=pedido.updated_at,
        )


@both_slashes(router.post, "/pedidos", status_code=201, responses=error_responses(409))
async def create_pedido(body: PedidoIn, service: ServiceDep) -> PedidoOut:
    """Place an order."""
    return PedidoOut.of(await service.create(NewPedido(producto_id=body.producto_id, cantidad=body.cantidad)))


@both_slashes(router.get, "/pedidos", responses=error_responses(409))
async def list_pedidos(
    request: Request,
    response: Response,
    service: ServiceDep,
    after: After = 0,
    limit: Limit = DEFAULT_PAGE_SIZE,
) -> list[PedidoOut]:
    """Orders in id order; a `Link: rel="next"` header points to the next page."""
    page = await service.list(after=after, limit=limit)
    response.headers.update(next_link(request, page.next_after, limit))
    return [PedidoOut.of(pedido) for pedido in page.items]


@both_slashes(router.get, "/pedidos/{pedido_id}", responses=error_responses(404, 409))
async def get_pedido(pedido_id: int, service: ServiceDep) -> PedidoOut:
    """One order."""
    return PedidoOut.of(await service.get(pedido_id))


@both_slashes(router.patch, "/pedidos/{pedido_id}", responses=error_responses(404, 409))
async def change_estado(pedido_id: int, body: EstadoIn, service: ServiceDep) -> PedidoOut:
    """Move an order along its life cycle (409 when the change is not allowed)."""
    return PedidoOut.of(await service.change_estado(pedido_id, body.estado))
