"""Bad input gets a 4xx that says what is wrong, never a 5xx, and never echoes what it was sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from tests.e2e.conftest import ClientFactory

JSON = {"content-type": "application/json"}
VALID = {"nombre": "Mesa", "precio": 19.99}


def assert_validation_error(response: httpx.Response, *, max_size: int = 2000) -> list[dict[str, Any]]:
    """FastAPI's 422 ``detail`` list of ``{loc, msg, type}``, without ``input`` or ``ctx``, and small."""
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == 422, (where, response.text)
    assert len(response.content) <= max_size, where
    detail: list[dict[str, Any]] = response.json()["detail"]
    assert isinstance(detail, list) and detail
    for error in detail:
        assert set(error) == {"loc", "msg", "type"}, error
    return detail


@pytest.fixture
async def pid(client: httpx.AsyncClient) -> int:
    response = await client.post("/productos", json={**VALID, "stock": 1})
    assert response.status_code == 201
    producto_id: int = response.json()["id"]
    return producto_id


async def send(client: httpx.AsyncClient, method: str, pid: int, content: bytes) -> httpx.Response:
    path = "/productos" if method == "POST" else f"/productos/{pid}"
    return await client.request(method, path, content=content, headers=JSON)


# --- malformed JSON --------------------------------------------------------------------------------------


WRITES = ("POST", "PUT", "PATCH")


@pytest.mark.parametrize("content", [b'{"nombre": ', b"not json", b'{"nombre":"x","precio":1,}', b"{'a': 1}", b"\x00"])
async def test_invalid_json_is_422(client: httpx.AsyncClient, pid: int, content: bytes) -> None:
    for method in WRITES:
        detail = assert_validation_error(await send(client, method, pid, content))
        assert detail[0]["type"] == "json_invalid"
    assert (await client.get(f"/productos/{pid}")).json()["stock"] == 1
    assert len((await client.get("/productos")).json()) == 1


async def test_missing_body_is_422(client: httpx.AsyncClient, pid: int) -> None:
    for method in ("POST", "PUT"):
        assert_validation_error(await send(client, method, pid, b""))


async def test_undecodable_body_is_a_client_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/productos", content=b'{"nombre":"\xff\xfe","precio":1}', headers=JSON)
    assert response.status_code in {400, 422}
    assert "detail" in response.json()


async def test_json_without_json_content_type_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/productos", content=b'{"nombre":"x","precio":1}', headers={"content-type": "text/plain"}
    )
    assert_validation_error(response)


# --- body size -------------------------------------------------------------------------------------------

LIMIT = 1000


def padded(size: int) -> bytes:
    body = b'{"nombre":"x","precio":1}'
    return body + b" " * (size - len(body))


async def test_body_at_the_limit_is_accepted_and_over_it_is_413(make_client: ClientFactory) -> None:
    async with make_client(max_body_size=LIMIT) as client:
        assert (await client.post("/productos", content=padded(LIMIT), headers=JSON)).status_code == 201
        response = await client.post("/productos", content=padded(LIMIT + 1), headers=JSON)
        assert response.status_code == 413
        assert "detail" in response.json()
        assert len((await client.get("/productos")).json()) == 1


class CountingBody:
    """A streamed request body that records how much of it the app pulled."""

    def __init__(self, chunks: int, size: int = 100) -> None:
        self.total = chunks
        self.size = size
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.total):
            self.sent += 1
            yield b" " * self.size


async def test_declared_content_length_over_the_limit_is_413_before_reading(
    make_client: ClientFactory,
) -> None:
    async with make_client(max_body_size=LIMIT) as client:
        body = CountingBody(chunks=100)
        response = await client.post(
            "/productos", content=body, headers={**JSON, "content-length": str(body.total * body.size)}
        )
        assert response.status_code == 413
        assert response.json()["detail"].startswith("request body larger than")
        assert body.sent == 0


async def test_streamed_body_over_the_limit_is_413_without_reading_it_all(make_client: ClientFactory) -> None:
    async with make_client(max_body_size=LIMIT) as client:
        body = CountingBody(chunks=100)
        response = await client.post("/productos", content=body, headers=JSON)
        assert response.status_code == 413
        assert "detail" in response.json()
        # The limit is 10 chunks: the 11th passes it, and nothing after that is pulled.
        assert body.sent <= LIMIT // body.size + 1
        for method in ("PUT", "PATCH"):
            body = CountingBody(chunks=100)
            response = await client.request(method, "/productos/1", content=body, headers=JSON)
            assert response.status_code == 413
            assert body.sent <= LIMIT // body.size + 1
        assert (await client.get("/health/live")).status_code == 200


async def test_invalid_content_length_is_400(make_client: ClientFactory) -> None:
    async with make_client(max_body_size=LIMIT) as client:
        response = await client.post("/productos", content=b"{}", headers={**JSON, "content-length": "abc"})
        assert response.status_code == 400


# --- ids -------------------------------------------------------------------------------------------------


async def by_id(client: httpx.AsyncClient, producto_id: str) -> list[httpx.Response]:
    """GET, PUT, PATCH and DELETE of ``/productos/{producto_id}`` (with a valid body where one is needed)."""
    path = f"/productos/{producto_id}"
    return [
        await client.get(path),
        await client.put(path, json=VALID),
        await client.patch(path, json=VALID),
        await client.delete(path),
    ]


@pytest.mark.parametrize("bad_id", [str(2**63), str(2**64), str(10**30), "-1", "0", f"-{2**63}"])
async def test_ids_out_of_range_are_404(client: httpx.AsyncClient, bad_id: str) -> None:
    for response in await by_id(client, bad_id):
        assert response.status_code == 404, (response.request.method, response.text)
        assert set(response.json()) == {"detail"}


@pytest.mark.parametrize("bad_id", ["abc", "1.5", "1e3", "0x10", "%20", "\u0661"])
async def test_non_integer_ids_are_422(client: httpx.AsyncClient, bad_id: str) -> None:
    for response in await by_id(client, bad_id):
        detail = assert_validation_error(response)
        assert detail[0]["loc"] == ["path", "producto_id"]


async def test_absurdly_long_id_is_not_a_server_error(client: httpx.AsyncClient) -> None:
    response = await client.get("/productos/" + "9" * 5000)
    assert response.status_code in {404, 422}
    assert len(response.content) < 2000


# --- precio ----------------------------------------------------------------------------------------------

BAD_PRECIOS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e309",
    "-1e309",
    "1e20",
    "0",
    "-0",
    "-1",
    "1.001",
    "0.001",
    "100000000",
]


@pytest.mark.parametrize("literal", BAD_PRECIOS)
async def test_bad_precio_is_422_without_echo(client: httpx.AsyncClient, pid: int, literal: str) -> None:
    content = b'{"nombre":"Mesa","precio":' + literal.encode() + b"}"
    for method in WRITES:
        response = await send(client, method, pid, content)
        detail = assert_validation_error(response)
        assert any(error["loc"] == ["body", "precio"] for error in detail), method
        if len(literal) > 2:
            assert literal not in response.text, method
    assert (await client.get(f"/productos/{pid}")).json()["precio"] == VALID["precio"]
    assert len((await client.get("/productos")).json()) == 1


@pytest.mark.parametrize("literal", ['"NaN"', '"Infinity"', '"1e309"', '"abc"', '""', "true", "null", "[]", "{}"])
async def test_precio_of_the_wrong_type_is_422(client: httpx.AsyncClient, literal: str) -> None:
    content = b'{"nombre":"Mesa","precio":' + literal.encode() + b"}"
    assert_validation_error(await client.post("/productos", content=content, headers=JSON))


# --- nombre, descripcion, stock --------------------------------------------------------------------------


async def test_nombre_of_201_characters_is_422(client: httpx.AsyncClient, pid: int) -> None:
    for method in WRITES:
        ok = await send(client, method, pid, b'{"nombre":"' + b"n" * 200 + b'","precio":1}')
        assert ok.status_code in {200, 201}, method
        response = await send(client, method, pid, b'{"nombre":"' + b"n" * 201 + b'","precio":1}')
        detail = assert_validation_error(response)
        assert detail[0]["loc"] == ["body", "nombre"]


async def test_huge_nombre_gets_a_small_422(client: httpx.AsyncClient, pid: int) -> None:
    for method in WRITES:
        response = await send(client, method, pid, b'{"nombre":"' + b"n" * 10_000 + b'","precio":1}')
        assert_validation_error(response, max_size=500)
        assert "nnnnnnnnnn" not in response.text, method


async def test_huge_descripcion_gets_a_small_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/productos", json={**VALID, "descripcion": "d" * 5001})
    assert_validation_error(response, max_size=500)
    assert "dddddddddd" not in response.text
    assert (await client.post("/productos", json={**VALID, "descripcion": "d" * 5000})).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"precio": 1},
        {"nombre": "Mesa"},
        {},
        {"nombre": "", "precio": 1},
        {"nombre": "   ", "precio": 1},
        {"nombre": None, "precio": 1},
        {"nombre": 123, "precio": 1},
        {"nombre": ["Mesa"], "precio": 1},
        {"nombre": {"x": 1}, "precio": 1},
        {"nombre": True, "precio": 1},
        {"nombre": "Mesa", "precio": 1, "descripcion": 5},
        {"nombre": "Mesa", "precio": 1, "descripcion": ["x"]},
        {"nombre": "Mesa", "precio": 1, "stock": -1},
        {"nombre": "Mesa", "precio": 1, "stock": 1.5},
        {"nombre": "Mesa", "precio": 1, "stock": "x"},
        {"nombre": "Mesa", "precio": 1, "stock": True},
        {"nombre": "Mesa", "precio": 1, "stock": None},
        {"nombre": "Mesa", "precio": 1, "stock": 2**31},
        {"nombre": "Mesa", "precio": 1, "stock": 10**100},
        {"nombre": "a\x00b", "precio": 1},
        {"nombre": "Mesa", "precio": 1, "descripcion": "\x00"},
    ],
    ids=lambda body: repr(body)[:40],
)
async def test_wrong_fields_are_422(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    assert_validation_error(await client.post("/productos", json=body))
    assert (await client.get("/productos")).json() == []


@pytest.mark.parametrize(
    "body",
    [
        {"nombre": None},
        {"precio": None},
        {"stock": None},
        {"stock": True},
        {"nombre": ""},
        {"nombre": "\x00"},
    ],
)
async def test_wrong_patches_are_422(client: httpx.AsyncClient, pid: int, body: dict[str, Any]) -> None:
    assert_validation_error(await client.patch(f"/productos/{pid}", json=body))
    stored = (await client.get(f"/productos/{pid}")).json()
    assert (stored["nombre"], stored["precio"], stored["stock"], stored["version"]) == ("Mesa", 19.99, 1, 1)


@pytest.mark.parametrize("content", [b"[]", b'"Mesa"', b"42", b"null", b"true", b'[{"nombre":"x","precio":1}]'])
async def test_body_that_is_not_an_object_is_422(client: httpx.AsyncClient, content: bytes) -> None:
    assert_validation_error(await client.post("/productos", content=content, headers=JSON))


@pytest.mark.parametrize(
    "content", [b'{"nombre":"\\ud800","precio":1}', b'{"nombre":"x","precio":1,"descripcion":"\\udfff"}']
)
async def test_lone_surrogates_are_422(client: httpx.AsyncClient, content: bytes) -> None:
    assert_validation_error(await client.post("/productos", content=content, headers=JSON))


async def test_huge_integer_literal_is_a_client_error(client: httpx.AsyncClient) -> None:
    content = b'{"nombre":"x","precio":1,"stock":' + b"9" * 5000 + b"}"
    response = await client.post("/productos", content=content, headers=JSON)
    assert 400 <= response.status_code < 500
    assert len(response.content) < 2000


async def test_deeply_nested_json_is_a_client_error(client: httpx.AsyncClient) -> None:
    content = b"[" * 100_000 + b"]" * 100_000
    response = await client.post("/productos", content=content, headers=JSON)
    assert 400 <= response.status_code < 500
