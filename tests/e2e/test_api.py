"""The HTTP contract of the products service (DESIGN.md), on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

MESA = {"nombre": "Mesa", "descripcion": "Roble", "precio": 19.99, "stock": 3}


async def create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/productos", json={**MESA, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def next_link(response: httpx.Response) -> str | None:
    header = response.headers.get("link")
    if header is None:
        return None
    match = re.fullmatch(r'<([^>]+)>; rel="next"', header)
    assert match, header
    return match.group(1)


# --- meta ------------------------------------------------------------------------------------------------


async def test_root_welcomes(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    body = response.json()
    assert "Bienvenido" in body["message"]
    assert body["docs"] == "/docs"


async def test_docs_and_openapi(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    assert "/openapi.json" in docs.text

    schema = (await client.get("/openapi.json")).json()
    assert set(schema["paths"]["/productos"]) == {"get", "post"}
    assert set(schema["paths"]["/productos/{producto_id}"]) == {"get", "put", "patch", "delete"}
    assert "/productos/" not in schema["paths"]
    assert "/health" in schema["paths"]
    producto = schema["components"]["schemas"]["ProductoOut"]["properties"]
    assert {"id", "nombre", "descripcion", "precio", "stock"} <= set(producto)


async def test_health_is_exactly_the_contract(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "service": "productos-api", "database": "connected"}
    assert response.headers["cache-control"] == "no-store"


async def test_liveness(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json()["status"] == "alive"


async def test_unknown_path_is_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


# --- CRUD ------------------------------------------------------------------------------------------------


async def test_crud_lifecycle(client: httpx.AsyncClient) -> None:
    created = await client.post("/productos", json=MESA)
    assert created.status_code == 201
    assert created.headers["content-type"] == "application/json"
    body = created.json()
    assert {k: body[k] for k in MESA} == MESA
    assert isinstance(body["id"], int) and body["version"] == 1
    assert created.headers["etag"] == '"1"'
    created_at = datetime.fromisoformat(body["created_at"])
    assert created_at.utcoffset() == timedelta(0)
    pid = body["id"]

    listed = await client.get("/productos")
    assert listed.status_code == 200
    assert listed.json() == [body]

    fetched = await client.get(f"/productos/{pid}")
    assert fetched.status_code == 200
    assert fetched.json() == body
    assert fetched.headers["etag"] == '"1"'

    replaced = await client.put(f"/productos/{pid}", json={"nombre": "Silla", "precio": 5})
    assert replaced.status_code == 200
    after_put = replaced.json()
    # PUT replaces every field: the ones left out take their defaults.
    assert {k: after_put[k] for k in MESA} == {
        "nombre": "Silla",
        "descripcion": None,
        "precio": 5,
        "stock": 0,
    }
    assert after_put["version"] == 2 and after_put["created_at"] == body["created_at"]
    assert replaced.headers["etag"] == '"2"'

    patched = await client.patch(f"/productos/{pid}", json={"stock": 8})
    assert patched.status_code == 200
    after_patch = patched.json()
    assert {k: after_patch[k] for k in MESA} == {
        "nombre": "Silla",
        "descripcion": None,
        "precio": 5,
        "stock": 8,
    }
    assert after_patch["version"] == 3
    assert (await client.get(f"/productos/{pid}")).json() == after_patch

    deleted = await client.delete(f"/productos/{pid}")
    assert deleted.status_code == 204
    assert deleted.content == b""

    missing = await client.get(f"/productos/{pid}")
    assert missing.status_code == 404
    assert isinstance(missing.json()["detail"], str)
    assert (await client.get("/productos")).json() == []


async def test_post_defaults(client: httpx.AsyncClient) -> None:
    body = await create(client, descripcion=None, stock=0)
    minimal = await client.post("/productos", json={"nombre": "Lápiz", "precio": 0.5})
    assert minimal.status_code == 201
    assert minimal.json()["descripcion"] is None and minimal.json()["stock"] == 0
    assert minimal.json()["id"] > body["id"]


async def test_patch_null_descripcion_clears_it(client: httpx.AsyncClient) -> None:
    pid = (await create(client))["id"]
    response = await client.patch(f"/productos/{pid}", json={"descripcion": None})
    assert response.status_code == 200
    assert response.json()["descripcion"] is None
    assert response.json()["nombre"] == MESA["nombre"]


async def test_unknown_fields_are_ignored(client: httpx.AsyncClient) -> None:
    body = await create(client, id=999, version=50, created_at="2000-01-01T00:00:00+00:00", extra="x")
    assert body["id"] != 999 and body["version"] == 1 and "extra" not in body
    assert not body["created_at"].startswith("2000")


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
async def test_missing_product_is_404_with_detail(client: httpx.AsyncClient, method: str) -> None:
    kwargs: dict[str, Any] = {"json": MESA} if method in {"put", "patch"} else {}
    response = await client.request(method.upper(), "/productos/4242", **kwargs)
    assert response.status_code == 404
    assert set(response.json()) == {"detail"}
    assert "4242" in response.json()["detail"]


@pytest.mark.parametrize("precio", [0.01, 0.1, 1, 19.99, 12345678.9, 99999999.99])
async def test_precio_is_a_json_number_exact_to_the_cent(client: httpx.AsyncClient, precio: float) -> None:
    response = await client.post("/productos", json={"nombre": "x", "precio": precio})
    assert response.status_code == 201
    assert f'"precio":{precio}' in response.text.replace(" ", "")
    pid = response.json()["id"]
    fetched = await client.get(f"/productos/{pid}")
    assert fetched.json()["precio"] == precio
    assert f'"precio":{precio}' in fetched.text.replace(" ", "")


async def test_precio_as_string_decimal(client: httpx.AsyncClient) -> None:
    response = await client.post("/productos", json={"nombre": "x", "precio": "0.30"})
    assert response.status_code == 201
    assert response.json()["precio"] == 0.3


# --- trailing slash --------------------------------------------------------------------------------------


async def test_every_route_works_with_and_without_trailing_slash(client: httpx.AsyncClient) -> None:
    for path in ("/productos", "/productos/"):
        response = await client.post(path, json=MESA)
        assert response.status_code == 201, path
    pid = response.json()["id"]
    for suffix in ("", "/"):
        listed = await client.get(f"/productos{suffix}")
        assert listed.status_code == 200 and len(listed.json()) == 2
        item = f"/productos/{pid}{suffix}"
        assert (await client.get(item)).status_code == 200
        assert (await client.put(item, json=MESA)).status_code == 200
        assert (await client.patch(item, json={"stock": 1})).status_code == 200
    deleted = await client.delete(f"/productos/{pid}/")
    assert deleted.status_code == 204
    other = (await client.get("/productos")).json()[0]["id"]
    assert (await client.delete(f"/productos/{other}")).status_code == 204
    assert (await client.get("/productos/")).json() == []


# --- pagination ------------------------------------------------------------------------------------------


async def test_list_pages_link_to_the_next_and_walk_every_row_once(client: httpx.AsyncClient) -> None:
    ids = [(await create(client, nombre=f"p{i}"))["id"] for i in range(7)]
    # A gap in the ids must not break the walk.
    assert (await client.delete(f"/productos/{ids[3]}")).status_code == 204
    expected = [i for i in ids if i != ids[3]]

    seen: list[int] = []
    url: str | None = "/productos?limit=2"
    pages = 0
    while url is not None:
        response = await client.get(url)
        assert response.status_code == 200
        page = response.json()
        assert 1 <= len(page) <= 2
        seen.extend(p["id"] for p in page)
        url = next_link(response)
        pages += 1
        assert pages <= 10
    assert seen == expected
    assert pages == 3


async def test_single_page_has_no_link(client: httpx.AsyncClient) -> None:
    await create(client)
    response = await client.get("/productos")
    assert len(response.json()) == 1
    assert "link" not in response.headers


async def test_link_keeps_the_limit_and_the_after_cursor(client: httpx.AsyncClient) -> None:
    ids = [(await create(client, nombre=f"p{i}"))["id"] for i in range(3)]
    response = await client.get("/productos/?limit=1")
    link = next_link(response)
    assert link is not None
    url = httpx.URL(link)
    assert url.path == "/productos/"
    assert dict(url.params) == {"after": str(ids[0]), "limit": "1"}
    response = await client.get(f"/productos?after={ids[1]}")
    assert [p["id"] for p in response.json()] == [ids[2]]


async def test_link_replaces_the_cursor_and_keeps_every_other_parameter(client: httpx.AsyncClient) -> None:
    ids = [(await create(client, nombre=f"p{i}"))["id"] for i in range(3)]
    response = await client.get("/productos?tag=a%20b&after=0&limit=1&tag=%26")
    assert response.headers["link"] == f'</productos?tag=a+b&tag=%26&after={ids[0]}&limit=1>; rel="next"'


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x", "after=-1", "after=x", f"after={2**63}"])
async def test_bad_list_parameters_are_422(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"/productos?{query}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "query"


# --- ETag / If-Match -------------------------------------------------------------------------------------


async def test_if_match_makes_writes_conditional(client: httpx.AsyncClient) -> None:
    pid = (await create(client))["id"]
    item = f"/productos/{pid}"

    ok = await client.put(item, json={**MESA, "stock": 10}, headers={"If-Match": '"1"'})
    assert ok.status_code == 200 and ok.headers["etag"] == '"2"'

    stale = await client.put(item, json={**MESA, "stock": 11}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    assert isinstance(stale.json()["detail"], str)
    stale = await client.patch(item, json={"stock": 12}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    stale = await client.delete(item, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    current = await client.get(item)
    assert current.json()["stock"] == 10 and current.headers["etag"] == '"2"'

    weak = await client.patch(item, json={"stock": 13}, headers={"If-Match": 'W/"2"'})
    assert weak.status_code == 200 and weak.headers["etag"] == '"3"'
    anything = await client.patch(item, json={"stock": 14}, headers={"If-Match": "*"})
    assert anything.status_code == 200 and anything.headers["etag"] == '"4"'
    assert (await client.delete(item, headers={"If-Match": '"4"'})).status_code == 204


async def test_if_match_on_missing_product_is_404(client: httpx.AsyncClient) -> None:
    response = await client.patch("/productos/777", json={"stock": 1}, headers={"If-Match": '"1"'})
    assert response.status_code == 404


@pytest.mark.parametrize("version", ["2147483647", "2147483648", "999999999999999999", "0"])
async def test_a_version_no_product_can_have_is_stale_not_a_server_error(
    client: httpx.AsyncClient, version: str
) -> None:
    """Versions are INTEGER: one beyond its range matches no product (412), or there is no product (404)."""
    item = f"/productos/{(await create(client))['id']}"
    tag = {"If-Match": f'"{version}"'}
    assert (await client.put(item, json=MESA, headers=tag)).status_code == 412
    assert (await client.patch(item, json={"stock": 1}, headers=tag)).status_code == 412
    assert (await client.delete(item, headers=tag)).status_code == 412
    assert (await client.get(item)).json()["version"] == 1  # nothing was written
    assert (await client.delete("/productos/987654", headers=tag)).status_code == 404


@pytest.mark.parametrize("value", [b"abc", b'"1.5"', b'"-1"', b'"' + b"9" * 30 + b'"', b'"\xb2"', b'"\xd9\xa1"'])
async def test_malformed_if_match_is_422(client: httpx.AsyncClient, value: bytes) -> None:
    pid = (await create(client))["id"]
    response = await client.patch(f"/productos/{pid}", json={"stock": 1}, headers=[(b"If-Match", value)])
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "if-match"]
    assert (await client.get(f"/productos/{pid}")).json()["stock"] == MESA["stock"]


async def test_concurrent_conditional_increments_all_apply(client: httpx.AsyncClient) -> None:
    pid = (await create(client, stock=0))["id"]
    item = f"/productos/{pid}"

    async def increment() -> None:
        for _ in range(200):
            current = await client.get(item)
            stock = current.json()["stock"]
            response = await client.patch(
                item, json={"stock": stock + 1}, headers={"If-Match": current.headers["etag"]}
            )
            if response.status_code == 200:
                return
            assert response.status_code == 412, response.text
        raise AssertionError("no progress")

    await asyncio.gather(*(increment() for _ in range(20)))
    final = await client.get(item)
    assert final.json()["stock"] == 20
    assert final.headers["etag"] == '"21"'


# --- request id ------------------------------------------------------------------------------------------


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": "req-123.abc"})
    assert response.headers["x-request-id"] == "req-123.abc"


async def test_request_id_is_generated_when_missing_or_unsafe(client: httpx.AsyncClient) -> None:
    generated = (await client.get("/productos")).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    another = (await client.get("/productos")).headers["x-request-id"]
    assert another != generated
    unsafe = await client.get("/productos", headers={"X-Request-ID": "bad id\twith <html>"})
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["x-request-id"])
    too_long = await client.get("/productos", headers={"X-Request-ID": "a" * 201})
    assert re.fullmatch(r"[0-9a-f]{32}", too_long.headers["x-request-id"])


async def test_request_id_is_on_errors_too(client: httpx.AsyncClient) -> None:
    response = await client.get("/productos/999", headers={"X-Request-ID": "trace-404"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "trace-404"
    response = await client.post("/productos", content=b"{", headers={"X-Request-ID": "trace-422"})
    assert response.status_code == 422
    assert response.headers["x-request-id"] == "trace-422"
