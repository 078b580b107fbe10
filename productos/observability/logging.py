"""JSON log lines on stdout, for CloudWatch Logs. One format for productos, gunicorn and uvicorn."""

from __future__ import annotations

import json
import logging
import logging.config
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

#: The id of the request being served, set by ``RequestContextMiddleware``; on every log line.
request_id_var: ContextVar[str | None] = ContextVar("productos_request_id", default=None)

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def logging_config(level: str = "info") -> dict[str, Any]:
    """A ``dictConfig`` that routes productos, gunicorn and uvicorn logs to stdout as JSON."""
    level = level.upper()
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
    quiet = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stdout": handler},
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            "gunicorn.error": {**quiet, "level": level},
            # productos writes its own structured access line; these would duplicate it.
            "gunicorn.access": {**quiet, "level": "WARNING"},
            "uvicorn": {**quiet, "level": level},
            "uvicorn.error": {**quiet, "level": level},
            "uvicorn.access": {**quiet, "level": "WARNING"},
        },
    }


def configure_logging(level: str = "info") -> None:
    logging.config.dictConfig(logging_config(level))
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
