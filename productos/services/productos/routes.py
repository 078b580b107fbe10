"""The products API: ``/productos`` CRUD, compatible with the original service, plus PATCH.

Responses are serialised straight from the domain objects (the ``response_model`` declarations document
them in OpenAPI without a second validation pass). Every single-product response carries an ``ETag`` with
the product's version; ``If-Match`` on PUT, PATCH and DELETE makes the write conditional (412 when stale).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from fastapi.exceptions import RequestValidationError

from productos.http import both_slashes, dump_json
from productos.pagination import DEFAULT_PAGE_SIZE, After, Limit, next_link
from productos.services.productos.domain import Producto, ProductoPatch
from productos.services.productos.schemas import ProductoIn, ProductoOut, ProductoPatchIn, producto_dict
from productos.services.productos.service import ProductoService

__all__ = ["SERVICE_STATE_KEY", "router"]

router = APIRouter(tags=["productos"])

#: Lifespan-state key of the ``ProductoService`` (``request.state.productos``).
SERVICE_STATE_KEY = "productos"


async def _service(request: Request) -> ProductoService:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request.
    service: ProductoService = getattr(request.state, SERVICE_STATE_KEY)
    return service


ProductoServiceDep = Annotated[ProductoService, Depends(_service)]

# Ids beyond the column's range cannot exist: they get 404 (the service checks), never a driver overflow.
ProductoId = Annotated[int, Path(description="Product id")]
IfMatch = Annotated[str | None, Header(description='Expected version, as the ETag returned: "3". Stale → 412.')]
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Not found"},
    412: {"description": "If-Match does not match the current version"},
    503: {"description": "Database unavailable"},
}


def _one(producto: Producto, status_code: int = 200) -> Response:
    return Response(
        dump_json(producto_dict(producto)),
        status_code=status_code,
        media_type="application/json",
        headers={"ETag": f'"{producto.version}"'},
    )


def _expected_version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.strip().removeprefix("W/").strip('"')
    # isdigit() alone accepts "²" (a latin-1 header byte) that int() refuses: a 500.
    if not (tag.isascii() and tag.isdigit()) or len(tag) > 18:
        raise RequestValidationError(
            [
                {
                    "loc": ("header", "if-match"),
                    "msg": 'If-Match must be an ETag such as "3"',
                    "type": "value_error",
                }
            ]
        )
    return int(tag)


@both_slashes(router.get, "/productos", response_model=list[ProductoOut], responses=_ERRORS)
async def list_productos(
    request: Request,
    service: ProductoServiceDep,
    after: After = 0,
    limit: Limit = DEFAULT_PAGE_SIZE,
) -> Response:
    """List products in id order; a `Link: rel="next"` header points to the next page."""
    page = await service.list(after=after, limit=limit)
    body = dump_json([producto_dict(p) for p in page.items])
    return Response(body, media_type="application/json", headers=next_link(request, page.next_after, limit))


@both_slashes(router.post, "/productos", status_code=201, response_model=ProductoOut, responses=_ERRORS)
async def create_producto(body: ProductoIn, service: ProductoServiceDep) -> Response:
    """Create a product."""
    return _one(await service.create(body.to_domain()), status_code=201)


@both_slashes(router.get, "/productos/{producto_id}", response_model=ProductoOut, responses=_ERRORS)
async def get_producto(producto_id: ProductoId, service: ProductoServiceDep) -> Response:
    """Get one product."""
    return _one(await service.get(producto_id))


@both_slashes(router.put, "/productos/{producto_id}", response_model=ProductoOut, responses=_ERRORS)
async def replace_producto(
    producto_id: ProductoId, body: ProductoIn, service: ProductoServiceDep, if_match: IfMatch = None
) -> Response:
    """Replace every field of a product."""
    updated = await service.update(
        producto_id, ProductoPatch.replacing(body.to_domain()), expected_version=_expected_version(if_match)
    )
    return _one(updated)


@both_slashes(router.patch, "/productos/{producto_id}", response_model=ProductoOut, responses=_ERRORS)
async def patch_producto(
    producto_id: ProductoId, body: ProductoPatchIn, service: ProductoServiceDep, if_match: IfMatch = None
) -> Response:
    """Change only the fields given."""
    updated = await service.update(producto_id, body.to_domain(), expected_version=_expected_version(if_match))
    return _one(updated)


@both_slashes(router.delete, "/productos/{producto_id}", status_code=204, responses=_ERRORS)
async def delete_producto(producto_id: ProductoId, service: ProductoServiceDep, if_match: IfMatch = None) -> Response:
    """Delete a product."""
    await service.delete(producto_id, expected_version=_expected_version(if_match))
    return Response(status_code=204)
