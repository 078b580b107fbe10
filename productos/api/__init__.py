"""HTTP edge: the FastAPI app factory, routes, dependencies and error mapping."""

from productos.api.app import create_app

__all__ = ["create_app"]
