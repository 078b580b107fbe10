"""Log lines on stdout, one format for productos, gunicorn and uvicorn: JSON for CloudWatch Logs and journald,
or aligned, coloured lines for a person at a terminal (``LOG_FORMAT``: ``auto``, ``json``, ``console``).

Both formats carry the same fields: time, level, logger, message, process id, the request and trace ids where
a request is in scope, the exception, and every ``extra`` field."""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Literal, TextIO, cast

import orjson
from opentelemetry.trace import SpanContext, get_current_span

__all__ = [
    "ConsoleFormatter",
    "JsonFormatter",
    "LogFormat",
    "configure_logging",
    "log_access",
    "logging_config",
    "request_id_var",
    "resolve_log_format",
    "set_xray_trace_ids",
]

#: ``auto``: readable lines when stdout is a terminal, JSON otherwise (systemd, the CloudWatch agent, pipes).
LogFormat = Literal["auto", "json", "console"]

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
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False, separators=(",", ":"))
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def _encode(entry: dict[str, Any]) -> str:
    """One line of JSON: orjson's (a third of the standard library's time on an access line), or the standard
    library's for what orjson refuses (integers beyond 64 bits). Both write what neither knows as ``str()``."""
    try:
        return orjson.dumps(entry, default=str, option=_ORJSON_OPTIONS).decode()
    except TypeError:
        return _ENCODER.encode(entry)


class _Fields(logging.Formatter):
    """Builds a record's fields, the same for every format."""

    _second = -1
    _second_text = ""

    def _time(self, created: float) -> str:
        # The second's text changes once a second: cache it, add the milliseconds.
        second = int(created)
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}+00:00"

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """time, level, logger, message, pid, request/trace/span ids, ``extra`` fields, exception."""
        entry: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        _add_context(entry, get_current_span().get_span_context())
        for key, value in islice(record.__dict__.items(), _FIRST_EXTRA, None):
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return entry


def _add_context(entry: dict[str, Any], span_context: SpanContext | None) -> None:
    """The request id and the trace and span ids, where there are some."""
    request_id = request_id_var.get()
    if request_id is not None:
        entry["request_id"] = request_id
    if span_context is not None and span_context.is_valid:
        trace_id = format(span_context.trace_id, "032x")
        entry["trace_id"] = trace_id
        entry["span_id"] = format(span_context.span_id, "016x")
        if _xray_trace_ids:
            entry["xray_trace_id"] = f"1-{trace_id[:8]}-{trace_id[8:]}"


class JsonFormatter(_Fields):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return _encode(self.fields(record))


_LEVEL_COLOURS = {"debug": "\x1b[2m", "info": "\x1b[32m", "warning": "\x1b[33m", "error": "\x1b[31m"}
_RESET, _DIM = "\x1b[0m", "\x1b[2m"


class ConsoleFormatter(_Fields):
    """One aligned line per record for a person: ``time level logger  message  key=value ...``; the exception
    follows on its own lines. Coloured unless ``colour=False``.

    Args:
        colour: ANSI colours for the level and the fields.
    """

    def __init__(self, colour: bool = True) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        entry = self.fields(record)
        time_text = entry.pop("time")[11:23]  # HH:MM:SS.mmm, UTC
        level = entry.pop("level")
        logger = entry.pop("logger")
        message = entry.pop("message")
        exception = entry.pop("exception", None)
        entry.pop("pid")
        rest = "  ".join(f"{key}={value}" for key, value in entry.items())
        if self.colour:
            colour = _LEVEL_COLOURS.get(level, "\x1b[1;31m")
            line = f"{_DIM}{time_text}{_RESET} {colour}{level:<7}{_RESET} {logger:<28} {message}"
            line += f"  {_DIM}{rest}{_RESET}" if rest else ""
        else:
            line = f"{time_text} {level:<7} {logger:<28} {message}" + (f"  {rest}" if rest else "")
        return f"{line}\n{exception}" if exception else line


# The process id on every line; kept current across forks rather than asked of the kernel per line.
_pid = os.getpid()


def _remember_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_remember_pid)


def _direct_stream_handler(logger: logging.Logger) -> logging.StreamHandler[TextIO] | None:
    """The one handler a record of ``logger`` at info would reach, when nothing but that handler would see it
    and it is a plain ``StreamHandler`` writing ``JsonFormatter`` lines: the configuration ``configure_logging``
    makes. ``None`` for any other (a handler or filter added anywhere on the way, another formatter)."""
    if logger.filters:
        return None
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if (
        type(found) is not logging.StreamHandler
        or type(found.formatter) is not JsonFormatter
        or found.filters
        or found.level > logging.INFO
    ):
        return None
    return found


def log_access(
    logger: logging.Logger, message: str, fields: dict[str, Any], span_context: SpanContext | None = None
) -> None:
    """Log one access line on ``logger`` at info: ``message``, the request and trace ids, then ``fields``.

    The line is exactly what ``logger.info(message, extra=fields)`` writes, and that is the path it takes
    whenever anything but ``configure_logging``'s JSON handler would see the record. On that handler alone it
    is written straight to the stream: the logging machinery (a ``LogRecord``, its filters and handler calls)
    is three quarters of the 77 Python calls the line otherwise costs on every request.

    Args:
        logger: the access channel (``productos.access``).
        message: the line's ``message``.
        fields: its ``extra`` fields.
        span_context: the current span's context (the request's), passed by a caller that holds it so the
            direct path need not look it up; ``None`` looks it up. The logging path always reads the current
            span, as for any other line.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _direct_stream_handler(logger)
    if handler is None:
        logger.info(message, extra=fields)
        return
    formatter = cast(JsonFormatter, handler.formatter)
    entry: dict[str, Any] = {
        "time": formatter._time(time.time()),
        "level": "info",
        "logger": logger.name,
        "message": message,
        "pid": _pid,
    }
    _add_context(entry, span_context if span_context is not None else get_current_span().get_span_context())
    entry.update(fields)
    line = _encode(entry) + handler.terminator
    with handler.lock:  # type: ignore[union-attr]
        try:
            handler.stream.write(line)
            handler.stream.flush()
        except Exception:
            # As StreamHandler.emit: a broken stream is reported (logging.raiseExceptions), never raised.
            handler.handleError(logger.makeRecord(logger.name, logging.INFO, "", 0, message, (), None, extra=fields))


def resolve_log_format(log_format: LogFormat, stream: TextIO | None = None) -> Literal["json", "console"]:
    """``auto`` becomes ``console`` when ``stream`` (stdout) is a terminal, else ``json``."""
    if log_format != "auto":
        return log_format
    stream = stream if stream is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    return "console" if callable(isatty) and isatty() else "json"


def logging_config(level: str = "info", log_format: LogFormat = "auto") -> dict[str, Any]:
    """A ``dictConfig`` that routes productos, gunicorn and uvicorn logs to stdout, as JSON or for a terminal."""
    level = level.upper()
    chosen = resolve_log_format(log_format)
    handler = {"class": "logging.StreamHandler", "formatter": chosen, "stream": "ext://sys.stdout"}
    quiet = {"handlers": [], "propagate": True}
    formatter: dict[str, Any] = {"()": JsonFormatter} if chosen == "json" else {"()": ConsoleFormatter}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {chosen: formatter},
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


def configure_logging(level: str = "info", log_format: LogFormat = "auto") -> None:
    """Route every log line to stdout in ``log_format``, at ``level``.

    Records then skip what these formats never write, as the logging HOWTO's "Optimization" section says to:
    the caller's file, line and function (a walk up the stack per record), the thread's name, the
    multiprocessing process' name and the asyncio task's name. A handler of your own that formats
    ``%(lineno)d`` or ``%(threadName)s`` gets placeholders.
    """
    logging.config.dictConfig(logging_config(level, log_format))
    logging._srcfile = None  # documented: "Set logging._srcfile to None"
    logging.logThreads = False
    logging.logMultiprocessing = False
    if sys.version_info >= (3, 12):
        logging.logAsyncioTasks = False
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
