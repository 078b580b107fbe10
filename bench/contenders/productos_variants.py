"""productos with one change made from outside, for experiments (``--variant``); no productos code edited.

- ``async_deps``: the request dependencies (``get_container``, ``get_product_service``) overridden by
  ``async`` functions doing the same thing. FastAPI runs a plain ``def`` dependency in the thread pool
  (a thread hop per request); an ``async def`` one runs inline on the event loop.
"""

from __future__ import annotations

from fastapi import Request

from productos.api import deps
from productos.bootstrap import Container
from productos.main import app as _app
from productos.services.productos import ProductService


async def _container(request: Request) -> Container:
    container: Container = request.state.container
    return container


async def _product_service(request: Request) -> ProductService:
    container: Container = request.state.container
    return container.productos


_app.dependency_overrides[deps.get_container] = _container
_app.dependency_overrides[deps.get_product_service] = _product_service
async_deps = _app
