"""The one place where errors become HTTP responses. Bodies never carry hosts, URLs or credentials."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from productos.domain.errors import (
    ConflictError,
    DatabaseUnavailableError,
    DomainValidationError,
    NotFoundError,
    StaleVersionError,
)

logger = logging.getLogger(__name__)

#: Seconds a client (or the ALB) should wait before retrying a 503.
RETRY_AFTER_SECONDS = 1


def validation_detail(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's ``{loc, msg, type}`` list without ``input`` and ``ctx``.

    FastAPI's default handler echoes the input: a huge body comes back whole, and a NaN or Infinity makes
    the 422 itself fail to serialise (a 500). Only the location, message and type are kept.
    """
    return [
        {
            "loc": [part if isinstance(part, int | str) else str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", ""))[:500],
            "type": str(error.get("type", "value_error")),
        }
        for error in errors
    ]


def _json(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _json(422, validation_detail(exc.errors()))


async def _domain_validation(_: Request, exc: Exception) -> JSONResponse:
    return _json(422, [{"loc": ["body"], "msg": str(exc), "type": "value_error"}])


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return _json(404, str(exc))


async def _stale_version(_: Request, exc: Exception) -> JSONResponse:
    return _json(412, str(exc))


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    return _json(409, str(exc))


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    reason = getattr(exc, "reason", "") or type(exc.__cause__ or exc).__name__
    logger.warning("database unavailable: %s", reason, extra={"reason": reason})
    return _json(503, "database unavailable", {"Retry-After": str(RETRY_AFTER_SECONDS)})


async def _http_exception(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _json(exc.status_code, exc.detail, dict(exc.headers) if exc.headers else None)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error", exc_info=exc)
    return _json(500, "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(DomainValidationError, _domain_validation)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(StaleVersionError, _stale_version)
    app.add_exception_handler(ConflictError, _conflict)
    app.add_exception_handler(DatabaseUnavailableError, _unavailable)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected)
