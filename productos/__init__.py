"""productos: async-first FastAPI microservices on AWS (ASG + ALB + RDS PostgreSQL), as a library.

The public modules, each with its ``__all__``:

- ``productos.runtime``: ``create_service``, ``open_runtime``, ``load_settings``, ``Runtime``.
- ``productos.settings``: the ``Settings`` schema and the settings-source ports.
- ``productos.domain``: errors, ids, keyset pages, and the generic ports (``UnitOfWork``, ``UnitOfWorkFactory``).
- ``productos.db``: unit-of-work bases, statements on the pooled connection, column types.
- ``productos.migrations``: a service's Alembic migrations.
- ``productos.pagination`` and ``productos.http``: keyset pagination and route helpers at the HTTP edge.
- ``productos.observability``: logging, metrics and tracing.
- ``productos.testing``: fakes and helpers for a service's tests.

The products API, productos' reference service, is ``productos.services.productos`` (``productos.main:app``).
"""

from typing import Any

from productos.domain import (
    ConcurrentUpdateError,
    ConfigurationError,
    ConflictError,
    DatabaseUnavailableError,
    DomainValidationError,
    HealthProbe,
    NotFoundError,
    ProductosError,
    StaleVersionError,
    UnitOfWork,
    UnitOfWorkFactory,
)
from productos.runtime import Migrations, Runtime, create_service, load_settings, open_runtime
from productos.settings import Settings
from productos.version import __version__

__all__ = [
    "ConcurrentUpdateError",
    "ConfigurationError",
    "ConflictError",
    "DatabaseUnavailableError",
    "DomainValidationError",
    "HealthProbe",
    "Migrations",
    "NotFoundError",
    "ProductosError",
    "Runtime",
    "Settings",
    "StaleVersionError",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "__version__",
    "create_service",
    "load_settings",
    "open_runtime",
]

#: Names of the products service that 0.1 exported from here; they still resolve, with a DeprecationWarning.
_MOVED = {
    "create_app": ("productos.services.productos.app", "create_app"),
    "Producto": ("productos.services.productos.domain", "Producto"),
    "NewProducto": ("productos.services.productos.domain", "NewProducto"),
    "ProductoPatch": ("productos.services.productos.domain", "ProductoPatch"),
    "ProductRepository": ("productos.services.productos.ports", "ProductoRepository"),
}


def __getattr__(name: str) -> Any:
    # The library imports nothing of the products service; these old names load it only when asked for.
    moved = _MOVED.get(name)
    if moved is None:
        raise AttributeError(f"module 'productos' has no attribute {name!r}")
    import importlib
    import warnings

    module, attribute = moved
    warnings.warn(f"productos.{name} moved to {module}.{attribute}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(module), attribute)
