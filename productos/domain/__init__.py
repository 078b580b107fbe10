"""The domain kernel every service builds on: errors, ids, keyset pages and generic ports.

Imports no framework (FastAPI, SQLAlchemy, boto): a service's domain and use cases depend on this and on
nothing outer.
"""

from productos.domain.errors import (
    ConcurrentUpdateError,
    ConfigurationError,
    ConflictError,
    DatabaseUnavailableError,
    DomainValidationError,
    NotFoundError,
    ProductosError,
    StaleVersionError,
)
from productos.domain.ids import ID_MAX, is_valid_id
from productos.domain.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page, clamp_limit, page_of
from productos.domain.ports import HealthProbe, UnitOfWork, UnitOfWorkFactory

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "ID_MAX",
    "MAX_PAGE_SIZE",
    "ConcurrentUpdateError",
    "ConfigurationError",
    "ConflictError",
    "DatabaseUnavailableError",
    "DomainValidationError",
    "HealthProbe",
    "NotFoundError",
    "Page",
    "ProductosError",
    "StaleVersionError",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "clamp_limit",
    "is_valid_id",
    "page_of",
]
