"""``ProductosHttpToolsProtocol`` in process, on a recording transport: every way a head can be cut into reads,
the edges of each limit, pipelining, the header timeout, and ``Connection: close`` while draining.

These also pin the uvicorn internals the protocol builds on: an upgrade of uvicorn that changes them fails here.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from productos.entrypoints.protocol import HttpLimits, ProductosHttpToolsProtocol
from productos.http.drain import Drain

LIMITS = HttpLimits(max_header_size=1024, max_header_count=8, header_timeout=0.2)


async def ok_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False
        self.eof = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def statuses(self) -> list[int]:
        return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", self.written)]


def connection(limits: HttpLimits = LIMITS, drain: Drain | None = None) -> tuple[Any, RecordingTransport]:
    config = Config(app=ok_app, lifespan="off", access_log=False)
    config.load()
    protocol = ProductosHttpToolsProtocol.configured(limits, drain)(config, ServerState(), {})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def feed(data: bytes, cuts: list[int] = [], **options: Any) -> RecordingTransport:  # noqa: B006
    protocol, transport = connection(**options)
    last = 0
    for cut in [*cuts, len(data)]:
        if transport.closed or transport.eof:
            break
        protocol.data_received(data[last:cut])
        last = cut
        await asyncio.sleep(0)
    for _ in range(100):
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport


def head_of(size: int) -> bytes:
    start = b"GET /x HTTP/1.1\r\nHost: test\r\nX-Pad: "
    return start + b"p" * (size - len(start) - 4) + b"\r\n\r\n"


def fields(count: int) -> bytes:
    return b"GET /x HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(count)) + b"\r\n"


#: Where a read may end: anywhere in the request line and fields (a sample), and at each of the last bytes.
CUTS = [*range(1, 1000, 37), *range(1014, 1024)]


@pytest.mark.parametrize("cut", CUTS)
async def test_a_head_at_the_limit_passes_however_it_is_cut(cut: int) -> None:
    assert (await feed(head_of(1024), [cut])).statuses() == [200]


@pytest.mark.parametrize("cut", [*CUTS, 1024])
async def test_a_head_one_byte_over_is_refused_however_it_is_cut(cut: int) -> None:
    transport = await feed(head_of(1025), [cut])
    assert transport.statuses() == [431]
    body = transport.written.partition(b"\r\n\r\n")[2]
    assert json.loads(body) == {"detail": "request header fields too large"}
    assert b"connection: close" in transport.written and transport.eof


async def test_many_small_reads_and_empty_lines_before_the_request() -> None:
    data = b"\r\n\r\n" + head_of(1024)
    assert (await feed(data, list(range(1, len(data))))).statuses() == [200]
    assert (await feed(b"\r\n" + head_of(1025), list(range(1, 1026, 3)))).statuses() == [431]


async def test_a_head_without_end_is_refused_within_one_read_past_the_limit() -> None:
    protocol, transport = connection()
    protocol.data_received(b"GET /x HTTP/1.1\r\nX-Long: ")
    for _ in range(10):
        if transport.written:
            break
        protocol.data_received(b"y" * 300)
    assert transport.statuses() == [431]
    protocol.connection_lost(None)


async def test_header_count_at_the_limit_and_over() -> None:
    assert (await feed(fields(8))).statuses() == [200]
    transport = await feed(fields(9))
    assert transport.statuses() == [431]
    assert json.loads(transport.written.partition(b"\r\n\r\n")[2]) == {"detail": "more than 8 header fields"}


async def test_too_many_fields_are_refused_at_the_end_of_a_read_before_the_head_ends() -> None:
    protocol, transport = connection()
    protocol.data_received(fields(20)[:-2])  # no blank line yet
    assert transport.statuses() == [431]
    protocol.connection_lost(None)


async def test_a_body_in_the_same_read_is_not_head() -> None:
    body = b"b" * 5000
    request = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    assert (await feed(request)).statuses() == [200]
    assert (await feed(request, [40, 2000, 4000])).statuses() == [200]


async def test_pipelined_requests_are_answered_in_order_before_a_refusal() -> None:
    assert (await feed(head_of(300) + head_of(1024) + head_of(200))).statuses() == [200, 200, 200]
    transport = await feed(head_of(300) + head_of(1024 + 100))
    assert transport.statuses() == [200, 431]


async def test_a_late_head_gets_408_and_an_idle_connection_is_left_to_keep_alive() -> None:
    protocol, transport = connection()
    protocol.data_received(head_of(100))
    await asyncio.sleep(LIMITS.header_timeout * 2)  # idle after a response: not the head's clock
    assert transport.statuses() == [200] and not transport.closed
    protocol.data_received(b"GET /x HTTP/1.1\r\nHo")
    await asyncio.sleep(LIMITS.header_timeout * 2)
    assert transport.statuses() == [200, 408]
    assert json.loads(transport.written.rpartition(b"\r\n\r\n")[2]) == {
        "detail": "request headers not received in time"
    }
    protocol.connection_lost(None)


async def test_a_connection_that_sends_nothing_gets_408() -> None:
    protocol, transport = connection()
    await asyncio.sleep(LIMITS.header_timeout * 2)
    assert transport.statuses() == [408]
    protocol.connection_lost(None)


async def test_responses_close_their_connection_once_the_process_leaves_service() -> None:
    drain = Drain()
    protocol, transport = connection(drain=drain)
    protocol.data_received(head_of(100))
    for _ in range(10):
        await asyncio.sleep(0)
    assert b"connection: close" not in transport.written and not transport.closed
    drain.retire()
    protocol.data_received(head_of(100))
    for _ in range(10):
        await asyncio.sleep(0)
    assert transport.statuses() == [200, 200]
    assert transport.written.count(b"connection: close") == 1 and transport.closed
    protocol.connection_lost(None)


def test_drain_moves_forward_only() -> None:
    drain = Drain()
    assert (drain.ready, drain.closing, drain.since) == (True, False, None)
    drain.retire()
    assert (drain.ready, drain.closing) == (True, True)
    since = drain.since
    drain.drain()
    assert (drain.ready, drain.closing, drain.since) == (False, True, since)
    drain.retire()
    assert drain.ready is False
