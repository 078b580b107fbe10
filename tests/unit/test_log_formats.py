"""LOG_FORMAT: JSON lines or readable lines, the same fields in both; ``auto`` picks by whether stdout is a TTY."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import subprocess
import sys

import pytest

from productos.observability.logging import (
    ConsoleFormatter,
    JsonFormatter,
    logging_config,
    request_id_var,
    resolve_log_format,
)


def _record() -> logging.LogRecord:
    logger = logging.getLogger("productos.test")
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    # Fields named as the access line names them: OpenTelemetry's semantic conventions, dotted.
    fields = {"http.route": "/a/{id}", "client.address": "203.0.113.9", "error.type": "ValueError"}
    return logger.makeRecord("productos.test", logging.ERROR, __file__, 1, "failed %s", ("x",), exc_info, extra=fields)


def test_both_formats_carry_the_same_fields() -> None:
    token = request_id_var.set("req-1")
    try:
        record = _record()
        as_json = json.loads(JsonFormatter().format(record))
        console = ConsoleFormatter(colour=False).format(record)
    finally:
        request_id_var.reset(token)
    assert as_json["message"] == "failed x" and as_json["request_id"] == "req-1"
    assert (as_json["http.route"], as_json["client.address"], as_json["error.type"]) == (
        "/a/{id}",
        "203.0.113.9",
        "ValueError",
    )
    assert "ValueError: boom" in as_json["exception"]
    first_line = console.splitlines()[0]
    assert as_json["time"][11:23] in first_line
    shown = ("error", "productos.test", "failed x", "http.route=/a/{id}", "client.address=203.0.113.9")
    for value in (*shown, "error.type=ValueError", "request_id=req-1"):
        assert value in first_line
    assert "ValueError: boom" in console


def test_console_colours_only_when_asked() -> None:
    record = _record()
    assert "\x1b[" in ConsoleFormatter(colour=True).format(record)
    assert "\x1b[" not in ConsoleFormatter(colour=False).format(record)


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(("chosen", "tty", "expected"), [
    ("auto", True, "console"), ("auto", False, "json"), ("json", True, "json"), ("console", False, "console"),
])  # fmt: skip
def test_auto_is_console_on_a_terminal_and_json_elsewhere(chosen: str, tty: bool, expected: str) -> None:
    assert resolve_log_format(chosen, _Stream(tty)) == expected  # type: ignore[arg-type]


def test_the_config_installs_the_chosen_formatter() -> None:
    assert logging_config("info", "json")["formatters"] == {"json": {"()": JsonFormatter}}
    assert logging_config("info", "console")["formatters"] == {"console": {"()": ConsoleFormatter}}


def test_a_service_on_a_terminal_prints_readable_lines_and_json_in_a_pipe(tmp_path: object) -> None:
    script = (
        "import logging\n"
        "from productos.observability.logging import configure_logging\n"
        "configure_logging('info')\n"
        "logging.getLogger('productos.demo').info('hello', extra={'http.route': '/x'})\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    piped = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    piped_line = json.loads(piped.stdout.strip())
    assert (piped_line["message"], piped_line["http.route"]) == ("hello", "/x")
    main, child = pty.openpty()
    with subprocess.Popen([sys.executable, "-c", script], stdout=child, stderr=child, env=env) as process:
        os.close(child)
        output = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        process.wait(timeout=30)
    os.close(main)
    text = output.decode()
    assert "hello" in text and "http.route=/x" in text and not text.lstrip().startswith("{")
