"""``/openapi.json``, ``/docs`` and ``/redoc``, which ``PRODUCTOS_DOCS_ENABLED=false`` turns off.

The setting is known only once the app starts (settings load in each worker's lifespan, from every source), while
FastAPI decides its documentation routes when the app is built. So ``create_service`` builds the app without
them and :func:`install_docs` adds FastAPI's own pages back, each answering the contract's JSON 404, as for any
unknown path, when the lifespan state says the documentation is off.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import JSONResponse
from starlette.responses import Response

__all__ = ["DOCS_STATE_KEY", "DOCS_URL", "OPENAPI_URL", "REDOC_URL", "docs_enabled", "install_docs"]

#: Key of ``PRODUCTOS_DOCS_ENABLED`` in the lifespan state (``request.state.productos_docs``).
DOCS_STATE_KEY = "productos_docs"
OPENAPI_URL = "/openapi.json"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"


def docs_enabled(request: Request) -> bool:
    """Whether the documentation is served (on when the app has no such state, as one built without the runtime)."""
    return bool(getattr(request.state, DOCS_STATE_KEY, True))


def _not_found() -> JSONResponse:
    return JSONResponse({"detail": "Not Found"}, status_code=404)


def install_docs(app: FastAPI) -> None:
    """Serve the OpenAPI document and its Swagger UI and ReDoc pages on ``app``, built with
    ``openapi_url=None, docs_url=None, redoc_url=None``, as FastAPI would, while :func:`docs_enabled`."""

    @app.get(OPENAPI_URL, include_in_schema=False)
    async def openapi(request: Request) -> Response:
        if not docs_enabled(request):
            return _not_found()
        schema = app.openapi()
        root_path = request.scope.get("root_path", "").rstrip("/")
        if root_path and app.root_path_in_servers and root_path not in {s.get("url") for s in app.servers}:
            schema = {**schema, "servers": [{"url": root_path}, *schema.get("servers", [])]}
        return JSONResponse(schema)

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> Response:
        if not docs_enabled(request):
            return _not_found()
        root_path = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root_path + OPENAPI_URL,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root_path + OAUTH2_REDIRECT_URL,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect(request: Request) -> Response:
        if not docs_enabled(request):
            return _not_found()
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> Response:
        if not docs_enabled(request):
            return _not_found()
        root_path = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(openapi_url=root_path + OPENAPI_URL, title=f"{app.title} - ReDoc")
