"""FastAPI dependencies of the runtime, as ``Annotated`` aliases.

They are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from productos.runtime.bootstrap import Runtime

__all__ = ["RuntimeDep", "get_runtime"]


async def get_runtime(request: Request) -> Runtime:
    """The shared runtime of any productos service (settings, engine, health, AWS clients)."""
    runtime: Runtime = request.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
