"""ASGI entry point of the products service: ``gunicorn -c python:productos.gunicorn_conf productos.main:app``.

Importing this module builds the app only; settings load and the engine opens in each worker's lifespan.
"""

from __future__ import annotations

from productos.services.productos.app import app, create_app

__all__ = ["app", "create_app"]
