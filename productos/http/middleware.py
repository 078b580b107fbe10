"""Pure ASGI middleware of the HTTP edge."""

from __future__ import annotations

from typing import Any, cast

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from productos.http.json import dump_json
from productos.settings import parse_proxies


class TrustedProxyHeadersMiddleware:
    """The client's address and scheme behind load balancers: uvicorn's proxy-headers handling, with the
    proxies of ``PRODUCTOS_TRUSTED_PROXIES``.

    For a request whose peer is a trusted proxy, uvicorn's ``ProxyHeadersMiddleware`` sets the scope's
    ``client`` from ``X-Forwarded-For`` (read right to left: the first address that is not a trusted proxy; the
    entries further left are whatever the client sent) and its ``scheme`` from ``X-Forwarded-Proto``; from any
    other peer both headers are ignored. The request's ``client.address`` and ``url.scheme`` (access line, span,
    metric) are then the scope's.

    gunicorn's uvicorn workers already do this in the server with the same proxies (``forwarded_allow_ips`` in
    ``productos.gunicorn_conf``); ``create_service`` installs this too, so that the app applies the setting under
    any server (``uvicorn``, tests through ``httpx.ASGITransport``). Applied twice it gives the same result: the
    address the server found is not a trusted proxy, or is the leftmost one, which stays.

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
        self._handlers: dict[str, ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state")
        spec: str = state.get(self.STATE_KEY, self.trusted_proxies) if state else self.trusted_proxies
        if not spec or scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        handler = self._handlers.get(spec)
        if handler is None:
            handler = self._handlers[spec] = _proxy_headers(self.app, spec)
        await handler(scope, receive, send)


def _proxy_headers(app: ASGIApp, spec: str) -> ASGIApp:
    entries = parse_proxies(spec)
    # uvicorn trusts every peer for exactly "*"; within a list it would take "*" for a host's name.
    hosts: str | list[str] = "*" if "*" in entries else list(entries)
    # uvicorn types its ASGI callables more narrowly than Starlette; they are the same protocol.
    return cast(ASGIApp, ProxyHeadersMiddleware(cast(Any, app), trusted_hosts=hosts))


class BodySizeLimitMiddleware:
    """Refuse bodies over ``max_body_size`` bytes with 413, without reading them whole.

    A declared ``Content-Length`` over the limit is refused before any of the body is read; a chunked body
    is counted as it streams and refused as soon as it passes the limit.
    """

    #: Key of the limit in the lifespan state; settings are only known once the app starts.
    STATE_KEY = "max_body_size"

    def __init__(self, app: ASGIApp, max_body_size: int = 1024 * 1024) -> None:
        self.app = app
        self.default_limit = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit: int = scope.get("state", {}).get(self.STATE_KEY, self.default_limit)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_error(send, 400, "invalid Content-Length header")
                    return
                if declared > limit:
                    await _send_error(send, 413, f"request body larger than {limit} bytes")
                    return
                break

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

        await self.app(scope, limited_receive, send)


async def _send_error(send: Send, status: int, detail: str) -> None:
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
