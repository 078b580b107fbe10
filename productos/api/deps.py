"""FastAPI dependencies, as ``Annotated`` aliases.

They are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from productos.bootstrap import Container, Runtime
from productos.services.productos import ProductService


async def get_runtime(request: Request) -> Runtime:
    """The shared runtime of any productos service (settings, engine, health, AWS clients)."""
    runtime: Runtime = request.state.runtime
    return runtime


async def get_container(request: Request) -> Container:
    container: Container = request.state.container
    return container


async def get_product_service(request: Request) -> ProductService:
    container: Container = request.state.container
    return container.productos


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ContainerDep = Annotated[Container, Depends(get_container)]
ProductServiceDep = Annotated[ProductService, Depends(get_product_service)]
