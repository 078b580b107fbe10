"""The products API: ``/productos`` CRUD, compatible with the original service, plus PATCH.

Responses are serialised straight from the domain objects (the ``response_model`` declarations document
them in OpenAPI without a second validation pass). Every single-product response carries an ``ETag`` with
the product's version; ``If-Match`` on PUT, PATCH and DELETE makes the write conditional (412 when stale).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from productos.api.deps import ProductServiceDep
from productos.api.schemas import ProductoIn, ProductoOut, ProductoPatchIn, dump_json, producto_dict
from productos.domain.models import ID_MAX, Producto, ProductoPatch
from productos.services.productos import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

router = APIRouter(tags=["productos"])

# Ids beyond the column's range cannot exist: they get 404 (the service checks), never a driver overflow.
ProductoId = Annotated[int, Path(description="Product id")]
IfMatch = Annotated[
    str | None, Header(description='Expected version, as the ETag returned: "3". Stale → 412.')
]
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Not found"},
    412: {"description": "If-Match does not match the current version"},
    503: {"description": "Database unavailable"},
}


def _both(route: Callable[..., Any], path: str, **kwargs: Any) -> Callable[[Any], Any]:
    """Register ``path`` with and without a trailing slash, so clients need no redirect."""

    def decorator(endpoint: Any) -> Any:
        route(path + "/", include_in_schema=False, **kwargs)(endpoint)
        return route(path, **kwargs)(endpoint)

    return decorator


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
            [{"loc": ("header", "if-match"), "msg": 'If-Match must be an ETag such as "3"', "type": "value_error"}]
        )
    return int(tag)


@_both(router.get, "/productos", response_model=list[ProductoOut], responses=_ERRORS)
async def list_productos(
    request: Request,
    service: ProductServiceDep,
    after: Annotated[int, Query(ge=0, le=ID_MAX, description="Return products with id > after")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> Response:
    """List products in id order; a `Link: rel="next"` header points to the next page."""
    page = await service.list(after=after, limit=limit)
    headers = {}
    if page.next_after is not None:
        next_url = request.url.include_query_params(after=page.next_after, limit=limit)
        headers["Link"] = f'<{next_url.path}?{next_url.query}>; rel="next"'
    body = dump_json([producto_dict(p) for p in page.items])
    return Response(body, media_type="application/json", headers=headers)


@_both(router.post, "/productos", status_code=201, response_model=ProductoOut, responses=_ERRORS)
async def create_producto(body: ProductoIn, service: ProductServiceDep) -> Response:
    """Create a product."""
    return _one(await service.create(body.to_domain()), status_code=201)


@_both(router.get, "/productos/{producto_id}", response_model=ProductoOut, responses=_ERRORS)
async def get_producto(producto_id: ProductoId, service: ProductServiceDep) -> Response:
    """Get one product."""
    return _one(await service.get(producto_id))


@_both(router.put, "/productos/{producto_id}", response_model=ProductoOut, responses=_ERRORS)
async def replace_producto(
    producto_id: ProductoId, body: ProductoIn, service: ProductServiceDep, if_match: IfMatch = None
) -> Response:
    """Replace every field of a product."""
    updated = await service.update(
        producto_id, ProductoPatch.replacing(body.to_domain()), expected_version=_expected_version(if_match)
    )
    return _one(updated)


@_both(router.patch, "/productos/{producto_id}", response_model=ProductoOut, responses=_ERRORS)
async def patch_producto(
    producto_id: ProductoId, body: ProductoPatchIn, service: ProductServiceDep, if_match: IfMatch = None
) -> Response:
    """Change only the fields given."""
    updated = await service.update(producto_id, body.to_domain(), expected_version=_expected_version(if_match))
    return _one(updated)


@_both(router.delete, "/productos/{producto_id}", status_code=204, responses=_ERRORS)
async def delete_producto(producto_id: ProductoId, service: ProductServiceDep, if_match: IfMatch = None) -> Response:
    """Delete a product."""
    await service.delete(producto_id, expected_version=_expected_version(if_match))
    return Response(status_code=204)
