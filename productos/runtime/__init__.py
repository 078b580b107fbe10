"""The productos runtime: what every service gets.

- ``create_service``: a FastAPI app with the production edge (settings loaded in each worker, one engine and
  pool per process, ``/health``, ``/health/live``, ``/metrics``, JSON logs, metrics and traces for every
  request and query, errors mapped to 4xx/503 with a ``detail``, bounded bodies, CloudWatch publishing).
- ``open_runtime``: the same runtime without HTTP, for jobs and scripts.
- ``load_settings`` / ``open_settings``: the settings from every source, in precedence order.
- ``RuntimeDep``: the runtime in a route.
"""

from productos.infra.db.migrate import Migrations
from productos.runtime.bootstrap import Runtime, open_engine, open_runtime
from productos.runtime.deps import RuntimeDep, get_runtime
from productos.runtime.service import StateBuilder, create_service
from productos.runtime.settings_loader import ResolvedSettings, load_settings, open_settings, resolve_settings

__all__ = [
    "Migrations",
    "ResolvedSettings",
    "Runtime",
    "RuntimeDep",
    "StateBuilder",
    "create_service",
    "get_runtime",
    "load_settings",
    "open_engine",
    "open_runtime",
    "open_settings",
    "resolve_settings",
]
