"""Pure ASGI middleware of the HTTP edge."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from productos.http.json import dump_json


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
