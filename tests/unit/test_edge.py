"""``EdgeMiddleware`` alone: what ``create_service``'s one edge layer does outside the cases the e2e suites cover
through a whole service (413, 400, 503 busy, 500 with X-Request-ID, the client's address behind proxies)."""

from __future__ import annotations

from typing import Any

import pytest

from productos.http.middleware import EdgeConfig, EdgeMiddleware
from productos.infra.db import replica


def scope(kind: str = "http", path: str = "/x", config: EdgeConfig | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "path": path,
        "headers": [(b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-proto", b"https")],
        "client": ("10.0.0.5", 5000),
        "scheme": "ws" if kind == "websocket" else "http",
        "state": {EdgeMiddleware.STATE_KEY: config} if config else {},
        **extra,
    }


async def nothing_received() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class Sent(list[dict[str, Any]]):
    async def __call__(self, message: dict[str, Any]) -> None:
        self.append(message)


async def test_websocket_connections_get_the_client_behind_trusted_proxies_too() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["client"], scope["scheme"]))

    edge = EdgeMiddleware(app)
    await edge(scope("websocket", config=EdgeConfig(trusted_proxies="10.0.0.0/16")), nothing_received, Sent())
    await edge(scope("websocket", config=EdgeConfig()), nothing_received, Sent())  # none trusted
    assert seen == [(("203.0.113.9", 0), "wss"), (("10.0.0.5", 5000), "ws")]


async def test_without_a_config_in_the_state_the_defaults_apply() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    edge = EdgeMiddleware(app, defaults=EdgeConfig(max_body_size=10))
    sent = Sent()
    await edge(scope(headers=[(b"content-length", b"11")]), nothing_received, sent)
    assert sent[0]["status"] == 413
    sent.clear()
    await edge(scope(headers=[(b"content-length", b"10")]), nothing_received, sent)
    assert sent[0]["status"] == 200


async def test_an_error_after_the_response_began_is_logged_and_the_place_given_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("half way")

    edge = EdgeMiddleware(app)
    sent = Sent()
    request = scope(config=EdgeConfig(max_concurrent_requests=1))
    await edge(request, nothing_received, sent)
    assert [message["type"] for message in sent] == ["http.response.start"]  # no second start: the server closes
    assert request["productos.error_type"] == "RuntimeError"
    assert edge.concurrency.active == 0
    assert "unhandled error" in caplog.text


async def test_a_request_reads_its_own_writes_only_with_a_replica() -> None:
    scopes: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(replica._SCOPE.get() is not None)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    edge = EdgeMiddleware(app)
    await edge(scope(config=EdgeConfig(read_replica=True)), nothing_received, Sent())
    await edge(scope(config=EdgeConfig()), nothing_received, Sent())
    assert scopes == [True, False]
