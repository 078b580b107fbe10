"""Domain layer: entities, invariants, errors and ports. Imports no framework."""

from productos.domain.errors import (
    ConfigurationError,
    ConflictError,
    DatabaseUnavailableError,
    DomainValidationError,
    NotFoundError,
    ProductosError,
    StaleVersionError,
)
from productos.domain.models import (
    DESCRIPCION_MAX_LENGTH,
    ID_MAX,
    NOMBRE_MAX_LENGTH,
    PRECIO_MAX,
    PRECIO_MIN,
    STOCK_MAX,
    NewProducto,
    Producto,
    ProductoPatch,
    is_valid_id,
)
from productos.domain.ports import HealthProbe, ProductRepository, UnitOfWork, UnitOfWorkFactory

__all__ = [
    "DESCRIPCION_MAX_LENGTH",
    "ID_MAX",
    "NOMBRE_MAX_LENGTH",
    "PRECIO_MAX",
    "PRECIO_MIN",
    "STOCK_MAX",
    "ConfigurationError",
    "ConflictError",
    "DatabaseUnavailableError",
    "DomainValidationError",
    "HealthProbe",
    "NewProducto",
    "NotFoundError",
    "ProductRepository",
    "Producto",
    "ProductoPatch",
    "ProductosError",
    "StaleVersionError",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "is_valid_id",
]
