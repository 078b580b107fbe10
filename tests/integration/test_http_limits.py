"""HTTP limits of the tuned serving, on raw sockets against real gunicorn: header size and count (431), the time
to send a head (408), and the bound on concurrent requests per worker (503 with Retry-After).

The issue's own cases (an 8 MB header, 100,000 headers) run against the defaults; the edges (exactly at a limit,
one byte or one field over, a head split anywhere) against small limits.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from productos.settings import Settings
from tests.integration.servers import Gunicorn

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MAX_HEADER_SIZE = 8192
MAX_HEADER_COUNT = 20
HEADER_TIMEOUT = 1.0
MAX_CONCURRENT = 2
#: Scheduling slack on a busy 2-core machine, above the bounds the settings promise.
SLACK = 1.5


@pytest.fixture(scope="module")
def tight(workdir: Path, database_url: str) -> Iterator[Gunicorn]:
    env = {
        "DATABASE_URL": database_url,
        "PRODUCTOS_MAX_HEADER_SIZE": str(MAX_HEADER_SIZE),
        "PRODUCTOS_MAX_HEADER_COUNT": str(MAX_HEADER_COUNT),
        "PRODUCTOS_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "PRODUCTOS_MAX_CONCURRENT_REQUESTS": str(MAX_CONCURRENT),
        "DB_POOL_SIZE": "4",
        "DB_MAX_OVERFLOW": "0",
    }
    with Gunicorn(workdir, env, workers=1) as server:
        yield server


@pytest.fixture(scope="module")
def defaults(workdir: Path, database_url: str) -> Iterator[Gunicorn]:
    with Gunicorn(workdir, {"DATABASE_URL": database_url, "DB_POOL_SIZE": "2"}, workers=1) as server:
        yield server


class Conn:
    """A raw client connection that reads responses one by one (pipelined ones stay buffered)."""

    def __init__(self, server: Gunicorn) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        self.buffer = b""

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next response: status, headers (lower-cased names), body (Content-Length)."""
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"closed before a response: {self.buffer!r}"
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        self.buffer = rest
        while len(self.buffer) < length:
            assert self._fill(), "closed in the middle of a body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), headers, body

    def closed(self) -> bool:
        """Whether the server has closed the connection (EOF, or a reset)."""
        try:
            return not self.buffer and self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def connect(server: Gunicorn) -> Conn:
    return Conn(server)


def head_of(size: int, path: str = "/health/live") -> bytes:
    """A GET whose head (request line to the blank line) is exactly ``size`` bytes."""
    start = f"GET {path} HTTP/1.1\r\nHost: test\r\nX-Pad: ".encode()
    pad = size - len(start) - len(b"\r\n\r\n")
    assert pad > 0
    return start + b"p" * pad + b"\r\n\r\n"


def head_with_fields(count: int) -> bytes:
    """A GET with ``count`` header fields, Host among them."""
    fields = [b"Host: test"] + [b"X-F%d: v" % n for n in range(count - 1)]
    return b"GET /health/live HTTP/1.1\r\n" + b"\r\n".join(fields) + b"\r\n\r\n"


def send_in_pieces(sock: Conn, data: bytes, cuts: list[int]) -> None:
    """Send ``data`` cut at ``cuts``, pausing between pieces so that the server reads them apart."""
    last = 0
    for cut in [*cuts, len(data)]:
        sock.sendall(data[last:cut])
        last = cut
        time.sleep(0.02)


# --- the cases, on the defaults -----------------------------------------------------------------------


def test_an_8_mb_header_is_refused_with_431(defaults: Gunicorn) -> None:
    with connect(defaults) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * (8 * 1024 * 1024) + b"\r\n\r\n")
        status, headers, body = sock.response()
        assert (status, json.loads(body)) == (431, {"detail": "request header fields too large"})
        assert headers["connection"] == "close" and headers["content-type"] == "application/json"
        assert sock.closed()


def test_100000_headers_are_refused_with_431(defaults: Gunicorn) -> None:
    limit = Settings.model_fields["max_header_count"].default
    with connect(defaults) as sock:
        sock.sendall(head_with_fields(100_000))
        status, _, body = sock.response()
        assert status == 431
        assert json.loads(body) == {"detail": f"more than {limit} header fields"}
        assert sock.closed()


def test_the_defaults_take_what_an_alb_forwards(defaults: Gunicorn) -> None:
    """An ALB forwards a head of up to 64 KiB; the defaults accept it, and 100 fields."""
    with connect(defaults) as sock:
        sock.sendall(head_of(64 * 1024))
        assert sock.response()[0] == 200
        sock.sendall(head_with_fields(100))
        assert sock.response()[0] == 200


# --- size and count, at their edges ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cuts",
    [[], [10, 4000, 8000], [MAX_HEADER_SIZE - 2], [MAX_HEADER_SIZE - 3], [MAX_HEADER_SIZE - 1]],
    ids=["whole", "three-cuts", "cut-in-blank-line", "cut-in-last-crlf", "cut-before-last-byte"],
)
def test_a_head_exactly_at_the_limit_is_served_one_byte_more_is_not(tight: Gunicorn, cuts: list[int]) -> None:
    with connect(tight) as sock:
        send_in_pieces(sock, head_of(MAX_HEADER_SIZE), cuts)
        status, headers, _ = sock.response()
        assert status == 200 and "connection" not in headers
    with connect(tight) as sock:
        send_in_pieces(sock, head_of(MAX_HEADER_SIZE + 1), [cut + 1 for cut in cuts])
        status, headers, body = sock.response()
        assert (status, json.loads(body)) == (431, {"detail": "request header fields too large"})
        assert headers["connection"] == "close" and sock.closed()


def test_an_endless_head_is_refused_before_it_ends(tight: Gunicorn) -> None:
    """No blank line ever comes: the refusal comes once the limit is passed, not at the end."""
    with connect(tight) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\nX-Long: ")
        for _ in range(5):
            sock.sendall(b"x" * (MAX_HEADER_SIZE // 2))
            time.sleep(0.05)
        status, _, _ = sock.response()
        assert status == 431


def test_header_count_at_the_limit_and_one_more(tight: Gunicorn) -> None:
    with connect(tight) as sock:
        sock.sendall(head_with_fields(MAX_HEADER_COUNT))
        assert sock.response()[0] == 200
        sock.sendall(head_with_fields(MAX_HEADER_COUNT + 1))
        status, _, body = sock.response()
        assert (status, json.loads(body)) == (431, {"detail": f"more than {MAX_HEADER_COUNT} header fields"})
        assert sock.closed()


def test_a_body_never_counts_as_head(tight: Gunicorn) -> None:
    """A body far over the head's limit, sent with its head in one write, is the body's business."""
    body = b'{"nombre": "grande", "precio": 2}' + b" " * (6 * MAX_HEADER_SIZE)
    request = b"POST /productos HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    request += b"Content-Length: %d\r\n\r\n" % len(body) + body
    with connect(tight) as sock:
        sock.sendall(request)
        status, _, answer = sock.response()
        assert status == 201, answer


def test_pipelined_requests_are_measured_each(tight: Gunicorn) -> None:
    """Two requests in one write are both served; an oversized one behind a good one is refused after it."""
    with connect(tight) as sock:
        sock.sendall(head_of(300) + head_of(MAX_HEADER_SIZE))
        assert sock.response()[0] == 200
        assert sock.response()[0] == 200
    with connect(tight) as sock:
        sock.sendall(head_of(300) + head_of(MAX_HEADER_SIZE + 200))
        assert sock.response()[0] == 200
        assert sock.response()[0] == 431


# --- the time to send a head ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b"GET /health/live HTTP/1.1\r\nHost: te"], ids=["nothing", "half-a-head"])
def test_a_head_that_never_completes_is_cut_after_the_header_timeout(tight: Gunicorn, sent: bytes) -> None:
    with connect(tight) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        status, headers, body = sock.response()
        waited = time.monotonic() - started
        assert (status, json.loads(body)) == (408, {"detail": "request headers not received in time"})
        assert headers["connection"] == "close" and sock.closed()
    assert HEADER_TIMEOUT - 0.1 <= waited <= HEADER_TIMEOUT + SLACK, waited


def test_a_trickled_head_is_cut_at_the_timeout_not_reset_by_each_byte(tight: Gunicorn) -> None:
    head = head_of(200)
    with connect(tight) as sock:
        started = time.monotonic()
        for byte in head[:-1]:  # one byte every 50 ms: the head would take 10 s
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.05)
            if time.monotonic() - started > HEADER_TIMEOUT + SLACK:
                break
        status, _, _ = sock.response()
        assert status == 408
    assert time.monotonic() - started <= HEADER_TIMEOUT + SLACK + 0.1


def test_an_idle_kept_alive_connection_is_not_cut_by_the_header_timeout(tight: Gunicorn) -> None:
    """Between requests the keep-alive timeout applies; the head's clock starts at the next request's first byte."""
    with connect(tight) as sock:
        sock.sendall(head_of(200))
        assert sock.response()[0] == 200
        time.sleep(HEADER_TIMEOUT + 0.5)
        head = head_of(200)
        send_in_pieces(sock, head, [20, 40])  # a slow start, well within the timeout
        assert sock.response()[0] == 200


# --- concurrent requests per worker ---------------------------------------------------------------------------


def test_requests_over_the_bound_get_503_with_retry_after(tight: Gunicorn) -> None:
    """Two POSTs whose bodies are still arriving hold the worker's two places: the next request is refused at
    once, health probes are still answered, and idle kept-alive connections never counted."""
    body = b'{"nombre": "lento", "precio": 1}'
    post = b"POST /productos HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    post += b"Content-Length: %d\r\n\r\n" % len(body)
    with contextlib.ExitStack() as stack:
        for _ in range(5):
            idle = stack.enter_context(connect(tight))
            idle.sendall(head_of(200))
            assert idle.response()[0] == 200
        slow = [stack.enter_context(connect(tight)) for _ in range(MAX_CONCURRENT)]
        for sock in slow:
            sock.sendall(post + body[:10])
        time.sleep(0.5)  # both are in the app, waiting for the rest of their bodies

        status, headers, answer = _request(tight, b"GET", "/productos?limit=1")
        assert (status, json.loads(answer)) == (503, {"detail": "server busy"})
        assert headers["retry-after"] == "1" and "x-request-id" in headers
        assert _request(tight, b"GET", "/health")[0] == 200
        assert _request(tight, b"GET", "/health/live")[0] == 200

        for sock in slow:
            sock.sendall(body[10:])
        assert [sock.response()[0] for sock in slow] == [201] * MAX_CONCURRENT
        assert _request(tight, b"GET", "/productos?limit=1")[0] == 200


def _request(server: Gunicorn, method: bytes, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    with connect(server) as sock:
        head = b"%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n" % (method, path.encode())
        if body:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        sock.sendall(head + b"\r\n" + body)
        return sock.response()
