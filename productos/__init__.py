"""productos: async-first FastAPI microservices on AWS (ASG + ALB + RDS PostgreSQL).

The public API: the app factory, the settings, the domain's entities, ports and errors.
"""

from productos.api.app import create_app, create_service
from productos.bootstrap import Migrations, Runtime, open_runtime
from productos.domain import (
    ConfigurationError,
    ConflictError,
    DatabaseUnavailableError,
    DomainValidationError,
    HealthProbe,
    NewProducto,
    NotFoundError,
    Producto,
    ProductoPatch,
    ProductosError,
    ProductRepository,
    StaleVersionError,
    UnitOfWork,
    UnitOfWorkFactory,
)
from productos.settings import Settings, load_settings

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "ConflictError",
    "DatabaseUnavailableError",
    "DomainValidationError",
    "HealthProbe",
    "Migrations",
    "NewProducto",
    "NotFoundError",
    "ProductRepository",
    "Producto",
    "ProductoPatch",
    "ProductosError",
    "Runtime",
    "Settings",
    "StaleVersionError",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "__version__",
    "create_app",
    "create_service",
    "load_settings",
    "open_runtime",
]
