"""uvicorn's httptools protocol with the limits a front-line HTTP server needs, and the drain's ``Connection: close``.

httptools (llhttp) has no limit on the size or number of header fields, and uvicorn none on the time a client
may take to send them: an 8 MB header and 100,000 headers were both answered 200 (the worker kept 21 MB), and a
connection that never finished its headers stayed open. gunicorn's ``limit_request_*`` settings apply to its
own parser only, which ``UvicornWorker`` does not use. This protocol enforces, per connection:

- **the size of a request head** (request line, header fields, their line ends and the blank line), counted on
  the bytes as they arrive, so no more than one read past the limit is ever buffered: 431;
- **the number of header fields**: 431, checked at the end of the head and of each read inside it;
- **the time to receive a head**, from the connection's opening (its first request) or from the first byte of
  a later request on a kept-alive connection: 408, then the connection closes. Between requests uvicorn's
  keep-alive timeout applies.

Each refusal is JSON (``{"detail": ...}``) with ``Connection: close``, after the responses to any requests
pipelined before it, and followed by a lingering close: what the client still sends is read and dropped for up
to :data:`LINGER_SECONDS`, so that it can read the answer.

httptools was kept over h11 (which bounds the head's size, though not the count or the time, and answers 400):
with the same app and one worker, h11 served 31-39 % fewer requests per second (figures in the README).

While the process leaves service (:class:`productos.http.drain.Drain`), every response closes its connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from productos.http.drain import Drain
from productos.http.json import dump_json
from productos.settings import Settings

__all__ = ["HttpLimits", "ProductosHttpToolsProtocol"]

_HEAD_END = b"\r\n\r\n"
#: Seconds a refused connection keeps reading (and discarding) after its answer: closing a socket with unread
#: bytes sends a reset, and a client still sending its oversized head would lose the answer to it.
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class HttpLimits:
    """Bounds on a request head (see the module's docstring).

    Attributes:
        max_header_size: bytes of a request head (``PRODUCTOS_MAX_HEADER_SIZE``).
        max_header_count: header fields of a request (``PRODUCTOS_MAX_HEADER_COUNT``).
        header_timeout: seconds to receive a request head (``PRODUCTOS_HEADER_TIMEOUT``).
    """

    max_header_size: int
    max_header_count: int
    header_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(settings.max_header_size, settings.max_header_count, settings.header_timeout)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that is refused."""


class ProductosHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with :class:`HttpLimits` and the drain's ``Connection: close``.

    uvicorn makes one per connection from ``config.http``; :meth:`configured` makes the class it is given.
    """

    limits: ClassVar[HttpLimits]
    drain: ClassVar[Drain | None] = None

    @classmethod
    def configured(cls, limits: HttpLimits, drain: Drain | None = None) -> type[ProductosHttpToolsProtocol]:
        """A subclass bound to ``limits`` and ``drain``, to pass as uvicorn's ``http`` setting."""
        bound = type(cls.__name__, (cls,), {"limits": limits, "drain": drain, "__module__": cls.__module__})
        return cast(type[ProductosHttpToolsProtocol], bound)

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # The head being received: whether one is awaited, its bytes so far (counted from its first byte when
        # ``_head_exact``), the last bytes of the previous read (a line end split between two reads).
        self._head_pending = True
        self._head_size = 0
        self._head_tail = b""
        self._head_exact = True
        # When the head being received began (its first byte, or the connection's opening), and the timer that
        # refuses it past the header timeout: armed only when a read ends inside a head, as most heads arrive
        # whole in one read.
        self._head_started: float | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._completed_in_read = False
        self._refusal: tuple[int, str] | None = None
        self._deferred_refusal: tuple[int, str] | None = None
        self._lingering = False

    # --- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_started = self.loop.time()
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own data_received, with the head measured before the parser buffers it, and refusals
        # answered with their own status rather than logged as invalid requests.
        if self._lingering:
            return
        self._unset_keepalive_if_required()
        self._completed_in_read = False
        if self._head_pending:
            if self._head_started is None:
                self._head_started = self.loop.time()
            if not self._measure_head(data):
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._head_pending and self._head_started is not None:
            # The read ended inside a head: the bytes counted so far are all head (a read that held the end of a
            # head was measured exactly before it was parsed), and so are the fields parsed so far.
            if len(self.headers or ()) > self.limits.max_header_count:
                self._refuse(431, f"more than {self.limits.max_header_count} header fields")
            elif self._head_size > self.limits.max_header_size:
                self._refuse(431, "request header fields too large")
            elif self._head_timer is None:
                self._arm_head_timer()

    # --- parser callbacks ---------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_started is None:
            self._head_started = self.loop.time()
        # A request pipelined behind one that ended in the same read began before this read was measured.
        self._head_exact = not self._completed_in_read

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._head_started = None
        self._cancel_head_timer()
        # Counted here rather than per field: a field costs at least 4 bytes of head, so the size limit has
        # already bounded how many can have been parsed.
        if len(self.headers) > self.limits.max_header_count:
            self._refusal = (431, f"more than {self.limits.max_header_count} header fields")
            raise _Refused
        if not self._head_exact:
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self.limits.max_header_size:
                self._refusal = (431, "request header fields too large")
                raise _Refused
        super().on_headers_complete()
        if self.drain is not None and self.drain.closing and self.cycle is not None:
            # uvicorn then answers with Connection: close and closes the connection after the response.
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_pending = True
        self._head_size = 0
        self._head_tail = b""
        self._completed_in_read = True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._deferred_refusal is not None and not self._answering():
            self._refuse(*self._deferred_refusal)

    # --- limits -------------------------------------------------------------------------------------------

    def _measure_head(self, data: bytes) -> bool:
        """Add ``data`` to the head being received; False (and the request refused) when it is too large."""
        view = data
        if self._head_size == 0 and not self._head_tail:
            # Empty lines before a request line are allowed (RFC 9112, 2.2) and are not head.
            view = data.lstrip(b"\r\n")
            if not view:
                return True
        window = self._head_tail + view
        end = window.find(_HEAD_END)
        if end >= 0:
            size = self._head_size - len(self._head_tail) + end + len(_HEAD_END)
            if size > self.limits.max_header_size:
                self._refuse(431, "request header fields too large")
                return False
            self._head_size = size
            self._head_tail = b""
        else:
            self._head_size += len(view)
            self._head_tail = window[-(len(_HEAD_END) - 1) :]
        return True

    def _arm_head_timer(self) -> None:
        assert self._head_started is not None
        self._cancel_head_timer()
        self._head_timer = self.loop.call_at(self._head_started + self.limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._head_pending:
            return
        self._refuse(408, "request headers not received in time")

    def _answering(self) -> bool:
        """Whether requests received before this one are still being answered (HTTP/1.1 pipelining)."""
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` with ``{"detail": detail}`` and close the connection: at once, or after the responses
        to requests pipelined before this one (what arrives meanwhile is dropped)."""
        self._refusal = None
        self._cancel_head_timer()
        if self.transport.is_closing():
            return
        if self._answering():
            self._deferred_refusal = (status, detail)
            self._lingering = True
            return
        self._deferred_refusal = None
        if status != 408:
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"
            self.logger.warning("Refused a request from %s: %d %s", client, status, detail)
        body = dump_json({"detail": detail})
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        if self.transport.can_write_eof():
            # A lingering close: the answer, then our end of the stream; what still arrives is dropped until the
            # client closes its end (eof_received closes the transport) or LINGER_SECONDS pass.
            self.transport.write_eof()
            self._lingering = True
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()
