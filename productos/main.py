"""ASGI entry point: ``gunicorn -c python:productos.gunicorn_conf productos.main:app``.

Importing this module builds the app only; settings load and the engine opens in each worker's lifespan.
"""

from __future__ import annotations

from productos.api.app import create_app

app = create_app()
