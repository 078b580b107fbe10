"""productos with one change made from outside, for experiments (``--variant``); no productos code edited.

- ``async_deps``: the request dependencies (``get_container``, ``get_product_service``) turned into ``async``
  functions doing the same thing. FastAPI runs a plain ``def`` dependency in the thread pool (a thread hop
  per request); an ``async def`` one runs inline on the event loop. The functions' code objects are swapped
  in place, because FastAPI builds its routes' dependency trees from them when productos is imported (and
  again, lazily, for included routers); ``dependency_overrides`` would not do for a measurement: with
  overrides set, FastAPI rebuilds each overridden dependant on every request.
"""

from __future__ import annotations

from fastapi import Request

from productos.api import deps
from productos.main import app as async_deps


async def _container(request: Request) -> object:
    return request.state.container


async def _product_service(request: Request) -> object:
    return request.state.container.productos


deps.get_container.__code__ = _container.__code__
deps.get_product_service.__code__ = _product_service.__code__

__all__ = ["async_deps"]
