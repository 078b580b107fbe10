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

from typing import TYPE_CHECKING, Any

from productos.version import __version__

if TYPE_CHECKING:
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

#: Where each name of ``__all__`` lives. They load on first use: ``import productos.settings`` (as gunicorn's
#: master does through ``productos.gunicorn_conf``) must not import the runtime, SQLAlchemy and FastAPI.
_EXPORTS = {
    **dict.fromkeys(
        (
            "ConcurrentUpdateError",
            "ConfigurationError",
            "ConflictError",
            "DatabaseUnavailableError",
            "DomainValidationError",
            "HealthProbe",
            "NotFoundError",
            "ProductosError",
            "StaleVersionError",
            "UnitOfWork",
            "UnitOfWorkFactory",
        ),
        "productos.domain",
    ),
    **dict.fromkeys(("Migrations", "Runtime", "create_service", "load_settings", "open_runtime"), "productos.runtime"),
    "Settings": "productos.settings",
}

#: Names of the products service that 0.1 exported from here; they still resolve, with a DeprecationWarning.
_MOVED = {
    "create_app": ("productos.services.productos.app", "create_app"),
    "Producto": ("productos.services.productos.domain", "Producto"),
    "NewProducto": ("productos.services.productos.domain", "NewProducto"),
    "ProductoPatch": ("productos.services.productos.domain", "ProductoPatch"),
    "ProductRepository": ("productos.services.productos.ports", "ProductoRepository"),
}


def __getattr__(name: str) -> Any:
    import importlib
    import importlib.util

    home = _EXPORTS.get(name)
    if home is not None:
        value = getattr(importlib.import_module(home), name)
        globals()[name] = value
        return value
    # The library imports nothing of the products service; these old names load it only when asked for.
    moved = _MOVED.get(name)
    if moved is None:
        # ``import productos`` then ``productos.runtime.…``: the submodules it used to import as a side effect.
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module 'productos' has no attribute {name!r}")
    import warnings

    module, attribute = moved
    warnings.warn(f"productos.{name} moved to {module}.{attribute}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(module), attribute)
