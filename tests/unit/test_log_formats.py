"""LOG_FORMAT: JSON lines or readable lines, the same fields in both; ``auto`` picks by whether stdout is a TTY."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from productos.observability.logging import (
    ConsoleFormatter,
    JsonFormatter,
    configure_logging,
    log_access,
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


# The access line ---------------------------------------------------------------------------------------------

_ACCESS_FIELDS = {"http.request.method": "GET", "http.route": "/a/{id}", "http.response.status_code": 200}
_SPAN = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, TraceFlags(1))


@pytest.fixture
def json_stdout(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.BytesIO]:
    """configure_logging's JSON configuration, its stdout a buffer; logging's own state restored after."""
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="utf-8", write_through=True))
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging._srcfile, logging.logThreads, logging.logMultiprocessing)
    configure_logging("info", "json")
    yield raw
    root.handlers[:], root.level = saved[0], saved[1]
    logging._srcfile, logging.logThreads, logging.logMultiprocessing = saved[2:]


def _only_configured_handler() -> None:
    # pytest adds its log-capturing handler to the root logger for the test's body: a second handler, which
    # would (rightly) send every line through logging.
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if isinstance(h.formatter, JsonFormatter | ConsoleFormatter)]


def _lines(raw: io.BytesIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in raw.getvalue().decode().splitlines()]


def test_the_access_line_written_directly_is_the_line_logging_writes(json_stdout: io.BytesIO) -> None:
    _only_configured_handler()
    logger = logging.getLogger("productos.access")
    token = request_id_var.set("req-7")
    try:
        log_access(logger, "GET /a/{id} 200", dict(_ACCESS_FIELDS), _SPAN)
        with trace.use_span(NonRecordingSpan(_SPAN)):
            logger.info("GET /a/{id} 200", extra=dict(_ACCESS_FIELDS))
    finally:
        request_id_var.reset(token)
    direct, through_logging = _lines(json_stdout)
    assert direct.pop("time") and through_logging.pop("time")
    assert list(direct.items()) == list(through_logging.items())  # the same fields, in the same order
    assert direct["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and direct["request_id"] == "req-7"


def test_the_access_line_goes_through_logging_when_anything_else_would_see_it(json_stdout: io.BytesIO) -> None:
    _only_configured_handler()
    logger = logging.getLogger("productos.access")
    seen: list[logging.LogRecord] = []
    collector = logging.Handler()
    collector.emit = seen.append  # type: ignore[method-assign]
    for where in (logger, logging.getLogger("productos")):
        where.addHandler(collector)
        try:
            log_access(logger, "GET /a/{id} 200", dict(_ACCESS_FIELDS), _SPAN)
        finally:
            where.removeHandler(collector)
    assert [record.getMessage() for record in seen] == ["GET /a/{id} 200"] * 2
    assert seen[0].__dict__["http.route"] == "/a/{id}"
    quiet = logging.Filter("nothing")
    logger.addFilter(quiet)
    try:
        log_access(logger, "filtered out", dict(_ACCESS_FIELDS), _SPAN)
    finally:
        logger.removeFilter(quiet)
    logging.getLogger().handlers[0].setFormatter(ConsoleFormatter(colour=False))
    log_access(logger, "GET /a/{id} 200", dict(_ACCESS_FIELDS), _SPAN)
    written = json_stdout.getvalue().decode().splitlines()
    assert len(written) == 3 and "filtered out" not in json_stdout.getvalue().decode()
    assert "http.route=/a/{id}" in written[-1] and not written[-1].startswith("{")


def test_the_access_line_honours_the_level_and_a_broken_stream(
    json_stdout: io.BytesIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    _only_configured_handler()
    logger = logging.getLogger("productos.access")
    logging.getLogger().setLevel(logging.WARNING)
    log_access(logger, "not at warning", dict(_ACCESS_FIELDS))
    assert json_stdout.getvalue() == b""
    logging.getLogger().setLevel(logging.INFO)
    reported: list[logging.LogRecord] = []
    handler = logging.getLogger().handlers[0]
    monkeypatch.setattr(handler, "handleError", reported.append)
    json_stdout.close()  # writes now raise ValueError, as on a stdout whose reader went away
    log_access(logger, "GET /a/{id} 200", dict(_ACCESS_FIELDS))
    assert [record.getMessage() for record in reported] == ["GET /a/{id} 200"]
