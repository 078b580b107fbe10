"""The products API: ``/productos`` CRUD, compatible with the original service, plus PATCH.

Responses are serialised straight from the domain objects (the ``response_model`` declarations document
them in OpenAPI without a second validation pass). Every single-product response carries an ``ETag`` with
the product's version; ``If-Match`` on PUT, PATCH and DELETE makes the write conditional (412 when stale).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic.json_schema import SkipJsonSchema

from productos.http import both_slashes, dump_json, error_responses
from productos.pagination import DEFAULT_PAGE_SIZE, After, Limit, next_link
from productos.services.productos.domain import Producto, ProductoPatch
from productos.services.productos.schemas import ProductoIn, ProductoOut, ProductoPatchIn, producto_dict
from productos.services.productos.service import ProductoService

__all__ = ["SERVICE_STATE_KEY", "router"]

router = APIRouter(tags=["productos"])

#: Lifespan-state key of the ``ProductoService`` (``request.state.productos``).
SERVICE_STATE_KEY = "productos"


def _service(request: Request) -> ProductoService:
    """The service from the lifespan state.

    Looked up by the routes themselves rather than declared as a FastAPI dependency: resolving a ``Depends``
    costs 84 Python calls per request on ``GET /productos/{id}`` (FastAPI 0.165), 10% of all it makes
    (bench/README.md). A service whose routes are not that hot may use ``Depends`` as usual.
    """
    service: ProductoService = request.scope["state"][SERVICE_STATE_KEY]
    return service


# Ids beyond the column's range cannot exist: they get 404 (the service checks), never a driver overflow.
ProductoId = Annotated[int, Path(description="Product id")]
IfMatch = Annotated[
    str | SkipJsonSchema[None],
    Header(
        description='Expected version, as the ETag returned: "3" (or *). Stale → 412.',
        json_schema_extra={"pattern": '^(\\*|(W/)?"[0-9]{1,18}")$'},
    ),
]

# OpenAPI: each route declares the errors its own logic answers (create_service declares the edge's: 400, 408,
# 413, 431, 500, 503). 409: a lock held past DB_LOCK_TIMEOUT (a row being changed, a migration) on any statement.
_ETAG = {
    "ETag": {"description": 'The product\'s version, quoted ("3"): send it as If-Match', "schema": {"type": "string"}}
}
_NEXT = {"Link": {"description": '<...>; rel="next": the next page, when there is one', "schema": {"type": "string"}}}
_ID = "$response.body#/id"
#: From a response that carries one product and its ETag to the operations on that product (clients and
#: schemathesis' stateful tests follow them); writes send the version read as If-Match.
_LINKS = {
    "GetProducto": {"operationId": "productos_get", "parameters": {"path.producto_id": _ID}},
    **{
        name: {
            "operationId": operation,
            "parameters": {"path.producto_id": _ID, "header.if-match": "$response.header.ETag"},
        }
        for name, operation in [
            ("ReplaceProducto", "productos_replace"),
            ("UpdateProducto", "productos_update"),
            ("DeleteProducto", "productos_delete"),
        ]
    },
}


def _one_responses(status: int, description: str, *errors: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"description": description, "headers": _ETAG, "links": _LINKS}, **error_responses(*errors)}


def _one(producto: Producto, status_code: int = 200) -> Response:
    return Response(
        dump_json(producto_dict(producto), floats_finite=True),
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


@both_slashes(
    router.get,
    "/productos",
    response_model=list[ProductoOut],
    responses={200: {"description": "A page of products", "headers": _NEXT}, **error_responses(409)},
)
async def list_productos(
    request: Request,
    after: After = 0,
    limit: Limit = DEFAULT_PAGE_SIZE,
) -> Response:
    """List products in id order; a `Link: rel="next"` header points to the next page."""
    page = await _service(request).list(after=after, limit=limit)
    body = dump_json([producto_dict(p) for p in page.items], floats_finite=True)
    return Response(body, media_type="application/json", headers=next_link(request, page.next_after, limit))


@both_slashes(
    router.post,
    "/productos",
    status_code=201,
    response_model=ProductoOut,
    responses=_one_responses(201, "Created", 409),
)
async def create_producto(body: ProductoIn, request: Request) -> Response:
    """Create a product."""
    return _one(await _service(request).create(body.to_domain()), status_code=201)


@both_slashes(
    router.get,
    "/productos/{producto_id}",
    response_model=ProductoOut,
    responses=_one_responses(200, "The product", 404, 409),
)
async def get_producto(producto_id: ProductoId, request: Request) -> Response:
    """Get one product."""
    return _one(await _service(request).get(producto_id))


@both_slashes(
    router.put,
    "/productos/{producto_id}",
    response_model=ProductoOut,
    responses=_one_responses(200, "Replaced", 404, 409, 412),
)
async def replace_producto(
    producto_id: ProductoId, body: ProductoIn, request: Request, if_match: IfMatch = None
) -> Response:
    """Replace every field of a product."""
    updated = await _service(request).update(
        producto_id, ProductoPatch.replacing(body.to_domain()), expected_version=_expected_version(if_match)
    )
    return _one(updated)


@both_slashes(
    router.patch,
    "/productos/{producto_id}",
    response_model=ProductoOut,
    responses=_one_responses(200, "Updated", 404, 409, 412),
)
async def patch_producto(
    producto_id: ProductoId, body: ProductoPatchIn, request: Request, if_match: IfMatch = None
) -> Response:
    """Change only the fields given."""
    updated = await _service(request).update(
        producto_id, body.to_domain(), expected_version=_expected_version(if_match)
    )
    return _one(updated)


@both_slashes(
    router.delete,
    "/productos/{producto_id}",
    status_code=204,
    responses={204: {"description": "Deleted"}, **error_responses(404, 409, 412)},
)
async def delete_producto(producto_id: ProductoId, request: Request, if_match: IfMatch = None) -> Response:
    """Delete a product."""
    await _service(request).delete(producto_id, expected_version=_expected_version(if_match))
    return Response(status_code=204)
