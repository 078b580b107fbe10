"""Route registration helpers, and the operation ids generated clients are named after."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

__all__ = ["both_slashes", "include_routes", "operation_id"]

#: ``(addresses one item, method)`` → the action of a resource route: ``/things`` and ``/things/{id}``.
_ACTIONS = {
    (False, "GET"): "list",
    (False, "POST"): "create",
    (True, "GET"): "get",
    (True, "PUT"): "replace",
    (True, "PATCH"): "update",
    (True, "DELETE"): "delete",
}


def both_slashes(route: Callable[..., Any], path: str, **kwargs: Any) -> Callable[[Any], Any]:
    """Register ``path`` so that it also answers with a trailing slash, and clients need no redirect.

    ``route`` is a router's or an app's route decorator (``router.get``). One route serves both spellings: its
    path pattern accepts an optional trailing slash. A second route per path would double what every request
    is matched against.
    """

    def decorator(endpoint: Any) -> Any:
        registered = route(path, **kwargs)(endpoint)
        added = route.__self__.routes[-1]  # type: ignore[attr-defined]
        assert getattr(added, "endpoint", None) is endpoint, "both_slashes takes a router's route decorator"
        if not path.endswith("/"):
            added.path_regex = re.compile(added.path_regex.pattern.removesuffix("$") + "/?$")
        return registered

    return decorator


#: Route options that only newer FastAPI releases take (0.12x: body limits, strict content type, form limits).
_NEWER_ROUTE_OPTIONS = tuple(
    name
    for name in ("strict_content_type", "max_body_size", "form_limits")
    if name in inspect.signature(APIRouter.add_api_route).parameters
)


def include_routes(app: FastAPI, router: APIRouter) -> None:
    """Register ``router``'s routes on ``app`` itself, as ``include_router`` did before FastAPI 0.120, rather
    than as one lazily included router.

    Since FastAPI 0.120 ``include_router`` keeps the router whole and matches each request against it twice
    (once to find the router, once to pick its route), saving and restoring scope keys around every candidate:
    on ``GET /productos/{id}`` that is 346 of the 1,242 Python calls a request made (bench/README.md). A router
    has already applied its own options (prefix, tags, dependencies, responses, response class) to each route
    when the route was added, so each FastAPI route is registered again with ``app.router.add_api_route`` as it
    is, its path pattern kept (see ``both_slashes``): the app's dependencies and ``dependency_overrides`` apply
    to it as to any route of the app. A router with any other kind of route (a mount, a websocket) is included
    as FastAPI does.
    """
    if not all(isinstance(route, APIRoute) for route in router.routes):
        app.include_router(router)
        return
    for route in router.routes:
        assert isinstance(route, APIRoute)
        newer = {name: getattr(route, name) for name in _NEWER_ROUTE_OPTIONS if hasattr(route, name)}
        app.router.add_api_route(
            route.path,
            route.endpoint,
            response_model=route.response_model,
            status_code=route.status_code,
            tags=route.tags,
            dependencies=route.dependencies,
            summary=route.summary,
            description=route.description,
            response_description=route.response_description,
            responses=route.responses,
            deprecated=route.deprecated,
            methods=route.methods,
            operation_id=route.operation_id,
            response_model_include=route.response_model_include,
            response_model_exclude=route.response_model_exclude,
            response_model_by_alias=route.response_model_by_alias,
            response_model_exclude_unset=route.response_model_exclude_unset,
            response_model_exclude_defaults=route.response_model_exclude_defaults,
            response_model_exclude_none=route.response_model_exclude_none,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            name=route.name,
            route_class_override=type(route),
            callbacks=route.callbacks,
            openapi_extra=route.openapi_extra,
            generate_unique_id_function=route.generate_unique_id_function,
            **newer,
        )
        app.router.routes[-1].path_regex = route.path_regex  # type: ignore[attr-defined]


def operation_id(route: APIRoute) -> str:
    """The OpenAPI operation id of ``route``: what a generated client names its method.

    ``create_service`` passes this to FastAPI as ``generate_unique_id_function``, so every service gets the same
    ids: ``{resource}_{action}`` for the routes of a resource, ``/things`` (GET ``things_list``, POST
    ``things_create``) and ``/things/{id}`` (GET ``things_get``, PUT ``things_replace``, PATCH ``things_update``,
    DELETE ``things_delete``); the endpoint's function name for any other route. An ``operation_id=`` given
    to the route wins: give one to a route of one segment that is no collection (``/health``), which this rule
    would call ``health_list``.

    FastAPI also names a route's combined body model after this id (``Body_things_create``).
    """
    segments = [segment for segment in route.path_format.split("/") if segment]
    method = min(route.methods or {"GET"})
    if 1 <= len(segments) <= 2 and not _is_parameter(segments[0]):
        item = len(segments) == 2
        action = _ACTIONS.get((item, method))
        if action is not None and (not item or _is_parameter(segments[1])):
            return f"{_identifier(segments[0])}_{action}"
    return _identifier(route.name)


def _is_parameter(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


def _identifier(text: str) -> str:
    return re.sub(r"\W", "_", text)
