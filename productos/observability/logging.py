"""JSON log lines on stdout, for CloudWatch Logs. One format for productos, gunicorn and uvicorn."""

from __future__ import annotations

import json
import logging
import logging.config
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from opentelemetry.trace import get_current_span

#: The id of the request being served, set by ``RequestContextMiddleware``; on every log line.
request_id_var: ContextVar[str | None] = ContextVar("productos_request_id", default=None)

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    # uvicorn's ``color_message`` repeats the message with terminal colour codes.
    | {"message", "asctime", "taskName", "color_message"}
)

_xray_trace_ids = False


def set_xray_trace_ids(enabled: bool) -> None:
    """Also write each trace id X-Ray style (``xray_trace_id``: ``1-<8 hex>-<24 hex>``)."""
    global _xray_trace_ids
    _xray_trace_ids = enabled


#: A fresh record's attributes come first in its ``__dict__``; ``extra`` fields are set after them.
_FIRST_EXTRA = len(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, process id, request id, trace and span ids
    (of the current OpenTelemetry span), and any ``extra`` fields."""

    _second = -1
    _second_text = ""

    def _time(self, created: float) -> str:
        # The second's text changes once a second: cache it, add the milliseconds.
        second = int(created)
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        span_context = get_current_span().get_span_context()
        if span_context.is_valid:
            trace_id = format(span_context.trace_id, "032x")
            entry["trace_id"] = trace_id
            entry["span_id"] = format(span_context.span_id, "016x")
            if _xray_trace_ids:
                entry["xray_trace_id"] = f"1-{trace_id[:8]}-{trace_id[8:]}"
        for key, value in islice(record.__dict__.items(), _FIRST_EXTRA, None):
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)


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
