"""A logging handler that keeps the service's log lines as the JSON objects its stdout handler writes."""

from __future__ import annotations

import json
import logging
from typing import Any

from productos.observability.logging import JsonFormatter


class JsonLines(logging.Handler):
    """Formats each record as it is emitted (in the request's context, so with its request and trace ids), as
    the stdout handler does, and keeps the parsed line in ``lines``."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))
