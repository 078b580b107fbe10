"""Domain errors. The HTTP edge maps them to status codes in one place (``productos.http.errors``)."""

from __future__ import annotations


class ProductosError(Exception):
    """Base class of every error productos raises on purpose."""


class NotFoundError(ProductosError):
    """The entity does not exist."""


class ConflictError(ProductosError):
    """The change conflicts with the stored state (a stale version, a unique key)."""


class StaleVersionError(ConflictError):
    """The caller's expected version (HTTP ``If-Match``) is not the stored one: nothing was written."""


class ConcurrentUpdateError(ConflictError):
    """A concurrent change held what this one needed for too long (a row lock past the lock timeout), or the
    two could not both proceed (a deadlock, a serialization failure): nothing was written, and the same request
    may succeed if retried (HTTP 409 with ``Retry-After``)."""


class DomainValidationError(ProductosError, ValueError):
    """An entity would break one of its invariants."""


class DatabaseUnavailableError(ProductosError):
    """The database cannot be reached, timed out, or the pool is exhausted.

    The message is safe to show to clients: it never names hosts, URLs or credentials. ``reason`` says what
    happened for the logs (an exception type and SQLSTATE), with no connection details either.
    """

    def __init__(self, message: str = "database unavailable", *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class ConfigurationError(ProductosError, ValueError):
    """The configuration is incomplete or invalid; the message says what to fix."""
