"""Pure ASGI middleware of the HTTP edge.

``create_service`` installs :class:`EdgeMiddleware`: what ``TrustedProxyHeadersMiddleware``,
``UnhandledErrorMiddleware``, ``ConcurrencyLimitMiddleware``, ``BodySizeLimitMiddleware`` and
``ReadYourWritesMiddleware`` each do as a layer of their own, in one ASGI layer with one lookup of the lifespan
state. Each of those classes stays usable alone; they and the edge share the functions that do the work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, cast

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from productos.http.errors import SendNotingStart, answer_unhandled
from productos.http.json import dump_json
from productos.http.limits import HEALTH_PATHS, ConcurrencyBound, send_busy
from productos.infra.db.replica import read_your_writes
from productos.settings import Settings, parse_proxies

__all__ = [
    "BodySizeLimitMiddleware",
    "EdgeConfig",
    "EdgeMiddleware",
    "TrustedProxyHeadersMiddleware",
    "applies_trusted_proxies",
    "trusted_hosts",
]

#: What a body may weigh when nothing says otherwise (``PRODUCTOS_MAX_BODY_SIZE``'s default).
DEFAULT_MAX_BODY_SIZE = 1024 * 1024


class TrustedProxyHeadersMiddleware:
    """The client's address and scheme behind load balancers: uvicorn's proxy-headers handling, with the
    proxies of ``PRODUCTOS_TRUSTED_PROXIES``.

    For a request whose peer is a trusted proxy, uvicorn's ``ProxyHeadersMiddleware`` sets the scope's
    ``client`` from ``X-Forwarded-For`` (read right to left: the first address that is not a trusted proxy; the
    entries further left are whatever the client sent) and its ``scheme`` from ``X-Forwarded-Proto``; from any
    other peer both headers are ignored. The request's ``client.address`` and ``url.scheme`` (access line, span,
    metric) are then the scope's.

    ``create_service`` applies the setting in the app (in :class:`EdgeMiddleware`), so that it holds under any
    server (``uvicorn``, tests through ``httpx.ASGITransport``); ``ProductosUvicornWorker`` then leaves
    uvicorn's own copy off when gunicorn's ``forwarded_allow_ips`` is the same list (the tuned configuration's),
    so the work is done once. Applied twice it gives the same result: the address the server found is not a
    trusted proxy, or is the leftmost one, which stays.

    Args:
        app: the application.
        trusted_proxies: addresses and CIDR networks (``10.0.0.0/16,127.0.0.1``), or ``*`` (every peer and every
            hop, so the leftmost address of ``X-Forwarded-For`` is taken, whatever the client sent: only when
            nothing but the load balancer can reach the instance); empty trusts none. The lifespan state's
            value, under ``STATE_KEY``, wins: settings are only known once the app starts.
    """

    #: Key of the trusted proxies (``Settings.trusted_proxies``) in the lifespan state.
    STATE_KEY = "trusted_proxies"

    def __init__(self, app: ASGIApp, trusted_proxies: str = "") -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state")
        spec: str = state.get(self.STATE_KEY, self.trusted_proxies) if state else self.trusted_proxies
        if spec and scope["type"] != "lifespan":
            await apply_trusted_proxies(scope, spec)
        await self.app(scope, receive, send)


def trusted_hosts(spec: str | Iterable[str]) -> str | list[str]:
    """``PRODUCTOS_TRUSTED_PROXIES`` (or gunicorn's ``forwarded_allow_ips``) as uvicorn's proxy-headers handling
    takes it: ``"*"`` when any entry is ``*``, else the entries, checked and normalised.

    Raises:
        ValueError: an entry is not an address, a network or ``*``.
    """
    entries = parse_proxies(spec)
    # uvicorn trusts every peer for exactly "*"; within a list it would take "*" for a host's name.
    return "*" if "*" in entries else list(entries)


async def _nothing(scope: Scope, receive: Receive, send: Send) -> None:
    return None


#: One uvicorn proxy-headers handler per setting, over an app that does nothing: they only rewrite the scope.
_REWRITERS: dict[str, ProxyHeadersMiddleware] = {}


async def apply_trusted_proxies(scope: Scope, spec: str) -> None:
    """Rewrite ``scope``'s ``client`` and ``scheme`` from the proxy headers, as uvicorn would for the proxies of
    ``spec``: uvicorn's own handling, which sets them on the scope it is given, run before the app rather than
    around it (one ASGI layer less)."""
    rewriter = _REWRITERS.get(spec)
    if rewriter is None:
        # uvicorn types its ASGI callables more narrowly than Starlette; they are the same protocol.
        rewriter = _REWRITERS[spec] = ProxyHeadersMiddleware(cast(Any, _nothing), trusted_hosts=trusted_hosts(spec))
    await rewriter(cast(Any, scope), cast(Any, _nothing), cast(Any, _nothing))


def applies_trusted_proxies(app: object) -> bool:
    """Whether ``app`` applies ``PRODUCTOS_TRUSTED_PROXIES`` itself: a Starlette or FastAPI app with
    :class:`EdgeMiddleware` or :class:`TrustedProxyHeadersMiddleware` among its middleware (a
    ``create_service`` app). The server's own proxy-headers handling would repeat the work."""
    classes = (EdgeMiddleware, TrustedProxyHeadersMiddleware)
    return any(getattr(entry, "cls", None) in classes for entry in getattr(app, "user_middleware", ()))


class BodySizeLimitMiddleware:
    """Refuse bodies over ``max_body_size`` bytes with 413, without reading them whole.

    A declared ``Content-Length`` over the limit is refused before any of the body is read; a chunked body
    is counted as it streams and refused as soon as it passes the limit.
    """

    #: Key of the limit in the lifespan state; settings are only known once the app starts.
    STATE_KEY = "max_body_size"

    def __init__(self, app: ASGIApp, max_body_size: int = DEFAULT_MAX_BODY_SIZE) -> None:
        self.app = app
        self.default_limit = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit: int = scope.get("state", {}).get(self.STATE_KEY, self.default_limit)
        refusal = body_refusal(scope, limit)
        if refusal is not None:
            await send_refusal(send, *refusal)
            return
        await self.app(scope, limit_receive(receive, limit), send)


def body_refusal(scope: Scope, limit: int) -> tuple[int, str] | None:
    """The status and detail that refuse the request before its body is read (an unreadable or too large
    ``Content-Length``), or None."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                return 400, "invalid Content-Length header"
            if declared > limit:
                return 413, f"request body larger than {limit} bytes"
            return None
    return None


def limit_receive(receive: Receive, limit: int) -> Receive:
    """``receive``, counting the body as it arrives and raising 413 as soon as it passes ``limit`` bytes."""
    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                # FastAPI re-raises HTTPException from body parsing; the error handlers answer it.
                raise HTTPException(413, f"request body larger than {limit} bytes")
        return message

    return limited_receive


async def send_refusal(send: Send, status: int, detail: str) -> None:
    """Answer ``{"detail": detail}`` with ``status`` and close the connection (the body is left unread)."""
    body = dump_json({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


@dataclasses.dataclass(frozen=True, slots=True)
class EdgeConfig:
    """What :class:`EdgeMiddleware` applies, from the settings (``create_service`` puts one in the lifespan
    state under ``EdgeMiddleware.STATE_KEY``)."""

    #: ``PRODUCTOS_TRUSTED_PROXIES`` (see :class:`TrustedProxyHeadersMiddleware`).
    trusted_proxies: str = ""
    #: ``PRODUCTOS_MAX_CONCURRENT_REQUESTS``; 0: no bound.
    max_concurrent_requests: int = 0
    #: ``PRODUCTOS_MAX_BODY_SIZE``.
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    #: Whether the service reads from a replica (``DATABASE_READ_URL``): each request then gets a
    #: read-your-writes scope.
    read_replica: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, *, read_replica: bool) -> EdgeConfig:
        return cls(
            trusted_proxies=settings.trusted_proxies,
            max_concurrent_requests=settings.max_concurrent_requests,
            max_body_size=settings.max_body_size,
            read_replica=read_replica,
        )


class EdgeMiddleware:
    """``create_service``'s edge in one ASGI layer, installed just inside ``RequestContextMiddleware`` (every
    answer below carries ``X-Request-ID`` and is measured and logged). For each HTTP request, in order:

    1. the client's address and scheme from trusted proxies' headers (:class:`TrustedProxyHeadersMiddleware`;
       WebSocket connections too): ``RequestContextMiddleware`` reads them from the scope once the request is
       done;
    2. the bound on concurrent requests: 503 ``server busy`` with ``Retry-After``, health probes exempt
       (``ConcurrencyLimitMiddleware``);
    3. the body limit: 400 or 413 on the declared ``Content-Length``, 413 as a streamed body passes it
       (:class:`BodySizeLimitMiddleware`);
    4. a read-your-writes scope when the service reads from a replica (``ReadYourWritesMiddleware``);
    5. an exception no handler took becomes the contract's 500, logged once with the request's ids
       (``UnhandledErrorMiddleware``).

    The settings come from the lifespan state, under :attr:`STATE_KEY` (an :class:`EdgeConfig`); without
    one, ``defaults``.

    Args:
        app: the application.
        defaults: what applies when the lifespan state has no :class:`EdgeConfig`.
        exempt_paths: paths the concurrency bound never refuses.
    """

    #: Key of the :class:`EdgeConfig` in the lifespan state.
    STATE_KEY = "productos_edge"

    def __init__(
        self, app: ASGIApp, defaults: EdgeConfig | None = None, exempt_paths: Iterable[str] = HEALTH_PATHS
    ) -> None:
        self.app = app
        self.defaults = defaults or EdgeConfig()
        self.exempt_paths = frozenset(exempt_paths)
        #: Requests being served now, and refused so far.
        self.concurrency = ConcurrencyBound()

    def _config(self, scope: Scope) -> EdgeConfig:
        state = scope.get("state")
        config: EdgeConfig | None = state.get(self.STATE_KEY) if state else None
        return config or self.defaults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket" and (spec := self._config(scope).trusted_proxies):
                await apply_trusted_proxies(scope, spec)
            await self.app(scope, receive, send)
            return
        # Subscripts rather than _config(): this runs for every request.
        try:
            config: EdgeConfig = scope["state"][self.STATE_KEY]
        except KeyError:
            config = self.defaults
        if config.trusted_proxies:
            await apply_trusted_proxies(scope, config.trusted_proxies)
        send_noting_start = SendNotingStart(send)
        bound = config.max_concurrent_requests if scope["path"] not in self.exempt_paths else 0
        try:
            if bound and not self.concurrency.admit(bound):
                await send_busy(send_noting_start)
                return
            try:
                refusal = body_refusal(scope, config.max_body_size)
                if refusal is not None:
                    await send_refusal(send_noting_start, *refusal)
                    return
                receive = limit_receive(receive, config.max_body_size)
                if config.read_replica:
                    with read_your_writes():
                        await self.app(scope, receive, send_noting_start)
                else:
                    await self.app(scope, receive, send_noting_start)
            finally:
                if bound:
                    self.concurrency.active -= 1
        except Exception as exc:
            await answer_unhandled(scope, send, exc, started=send_noting_start.started)
