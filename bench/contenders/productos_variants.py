"""productos with one change made from outside, for experiments (``--variant``); no productos code edited.

- ``async_deps``: the request dependencies (``get_container``, ``get_product_service``) swapped for ``async``
  functions doing the same thing, in the built routes. FastAPI runs a plain ``def`` dependency in the
  thread pool (a thread hop per request); an ``async def`` one runs inline on the event loop. (FastAPI's
  ``dependency_overrides`` would not do for a measurement: with overrides set it rebuilds each overridden
  dependant on every request.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import Request

from productos.api import deps
from productos.bootstrap import Container
from productos.main import app as async_deps
from productos.services.productos import ProductService


async def _container(request: Request) -> Container:
    container: Container = request.state.container
    return container


async def _product_service(request: Request) -> ProductService:
    container: Container = request.state.container
    return container.productos


_REPLACEMENTS = {deps.get_container: _container, deps.get_product_service: _product_service}


def _swap(dependant: Any) -> None:
    for sub in dependant.dependencies:
        sub.call = _REPLACEMENTS.get(sub.call, sub.call)
        _swap(sub)


def _routes(routes: list[Any]) -> Iterator[Any]:
    for route in routes:
        yield route
        included = getattr(route, "original_router", None)  # FastAPI's lazily included routers
        if included is not None:
            yield from _routes(included.routes)


# The routes were built when productos.api was imported: swap the callables in their dependency trees (FastAPI
# decides per request whether a dependency is a coroutine function).
for _route in _routes(async_deps.routes):
    if getattr(_route, "dependant", None) is not None:
        _swap(_route.dependant)
