"""The OpenAPI document clients are generated from: operation ids, one error model, typed health, the docs switch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI

from productos import Settings
from productos.http import ErrorBody, error_responses, operation_id
from productos.services.productos.app import create_app
from tests.e2e.conftest import ClientFactory

SCHEMA: dict[str, Any] = create_app().openapi()
ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
VALIDATION = {"$ref": "#/components/schemas/HTTPValidationError"}
#: What create_service declares on every operation.
EDGE = {"400", "408", "413", "431", "500", "503"}


def operations(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{method.upper()} {path}": op for path, item in schema["paths"].items() for method, op in item.items()}


def response_schema(op: dict[str, Any], status: str) -> Any:
    return op["responses"][status]["content"]["application/json"]["schema"]


def test_operation_ids_are_pinned() -> None:
    """Generated clients name their methods after these: changing one breaks every client."""
    assert {name: op["operationId"] for name, op in operations(SCHEMA).items()} == {
        "GET /": "root",
        "GET /health": "health",
        "GET /health/live": "health_live",
        "GET /productos": "productos_list",
        "POST /productos": "productos_create",
        "GET /productos/{producto_id}": "productos_get",
        "PUT /productos/{producto_id}": "productos_replace",
        "PATCH /productos/{producto_id}": "productos_update",
        "DELETE /productos/{producto_id}": "productos_delete",
    }


def test_another_service_gets_the_same_kind_of_ids() -> None:
    from pedidos.main import create_app as create_pedidos

    assert {name: op["operationId"] for name, op in operations(create_pedidos().openapi()).items()} == {
        "GET /": "root",
        "GET /health": "health",
        "GET /health/live": "health_live",
        "GET /pedidos": "pedidos_list",
        "POST /pedidos": "pedidos_create",
        "GET /pedidos/{pedido_id}": "pedidos_get",
        "PATCH /pedidos/{pedido_id}": "pedidos_update",
    }


def test_the_rule_names_resource_routes_and_falls_back_to_the_function_name() -> None:
    router = APIRouter()
    for method in ("get", "post"):
        router.add_api_route("/things", lambda: None, methods=[method])
    for method in ("get", "put", "patch", "delete"):
        router.add_api_route("/things/{thing_id}", lambda: None, methods=[method])

    @router.post("/things/{thing_id}/archive")
    async def archive_thing(thing_id: int) -> None: ...

    @router.get("/things-v2/{thing_id}")
    async def thing_v2(thing_id: int) -> None: ...

    @router.get("/status", operation_id="status")
    async def status() -> None: ...

    app = FastAPI(generate_unique_id_function=operation_id)
    app.include_router(router)
    assert {name: op["operationId"] for name, op in operations(app.openapi()).items()} == {
        "GET /things": "things_list",
        "POST /things": "things_create",
        "GET /things/{thing_id}": "things_get",
        "PUT /things/{thing_id}": "things_replace",
        "PATCH /things/{thing_id}": "things_update",
        "DELETE /things/{thing_id}": "things_delete",
        "POST /things/{thing_id}/archive": "archive_thing",
        "GET /things-v2/{thing_id}": "things_v2_get",
        "GET /status": "status",
    }


def test_every_operation_declares_the_edges_errors_with_one_model() -> None:
    error_body = SCHEMA["components"]["schemas"]["ErrorBody"]
    assert (error_body["type"], error_body["required"]) == ("object", ["detail"])
    assert list(error_body["properties"]) == ["detail"] and error_body["properties"]["detail"]["type"] == "string"
    for name, op in operations(SCHEMA).items():
        assert set(op["responses"]) >= EDGE, name
        for status in EDGE - ({"503"} if name == "GET /health" else set()):
            assert response_schema(op, status) == ERROR_BODY, (name, status)
        assert "Retry-After" in op["responses"]["503"]["headers"], name


def test_each_route_declares_what_its_own_logic_answers() -> None:
    ops = operations(SCHEMA)
    own = {name: set(op["responses"]) - EDGE for name, op in ops.items()}
    assert own == {
        "GET /": {"200"},
        "GET /health": {"200"},
        "GET /health/live": {"200"},
        "GET /productos": {"200", "409", "422"},
        "POST /productos": {"201", "409", "422"},
        "GET /productos/{producto_id}": {"200", "404", "409", "422"},
        "PUT /productos/{producto_id}": {"200", "404", "409", "412", "422"},
        "PATCH /productos/{producto_id}": {"200", "404", "409", "412", "422"},
        "DELETE /productos/{producto_id}": {"204", "404", "409", "412", "422"},
    }
    for name, op in ops.items():
        for status in {"404", "409", "412"} & set(op["responses"]):
            assert response_schema(op, status) == ERROR_BODY, (name, status)
        if "422" in op["responses"]:
            # 422 keeps FastAPI's list of {loc, msg, type}.
            assert response_schema(op, "422") == VALIDATION, name
    validation = SCHEMA["components"]["schemas"]["ValidationError"]
    assert {"loc", "msg", "type"} <= set(validation["required"])


def test_product_responses_carry_their_etag_and_links_to_the_product() -> None:
    ops = operations(SCHEMA)
    for name, status in [
        ("POST /productos", "201"),
        ("GET /productos/{producto_id}", "200"),
        ("PUT /productos/{producto_id}", "200"),
        ("PATCH /productos/{producto_id}", "200"),
    ]:
        response = ops[name]["responses"][status]
        assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ProductoOut"}
        assert "ETag" in response["headers"]
        links = response["links"]
        assert {link["operationId"] for link in links.values()} == {
            "productos_get",
            "productos_replace",
            "productos_update",
            "productos_delete",
        }
        for link in links.values():
            assert link["parameters"]["path.producto_id"] == "$response.body#/id"
        assert links["ReplaceProducto"]["parameters"]["header.if-match"] == "$response.header.ETag"
    assert "Link" in ops["GET /productos"]["responses"]["200"]["headers"]


def test_health_is_typed() -> None:
    ops = operations(SCHEMA)
    health = {"$ref": "#/components/schemas/HealthStatus"}
    assert response_schema(ops["GET /health"], "200") == health
    assert response_schema(ops["GET /health"], "503") == health
    status = SCHEMA["components"]["schemas"]["HealthStatus"]
    assert set(status["required"]) == {"status", "service"}
    assert status["properties"]["status"]["enum"] == ["healthy", "unhealthy", "draining"]
    assert status.get("additionalProperties", True) is not False  # fields may be added
    live = SCHEMA["components"]["schemas"]["LivenessStatus"]
    assert response_schema(ops["GET /health/live"], "200") == {"$ref": "#/components/schemas/LivenessStatus"}
    assert live["properties"]["status"]["const"] == "alive"


def test_request_schemas_say_what_the_service_accepts() -> None:
    """Clients (and schemathesis) generate from these: bounds in JSON Schema's own keywords, no null the service
    refuses, prices to the cent."""
    schemas = SCHEMA["components"]["schemas"]
    full, patch = schemas["ProductoIn"]["properties"], schemas["ProductoPatchIn"]["properties"]
    for fields in (full, patch):
        assert (fields["stock"]["minimum"], fields["stock"]["maximum"]) == (0, 2**31 - 1)
        assert fields["precio"]["type"] == "number" and fields["precio"]["multipleOf"] == 0.01
        assert fields["nombre"]["type"] == "string"  # not nullable: a null nombre is refused
    assert {"type": "null"} in patch["descripcion"]["anyOf"]  # null clears it


def test_error_responses_refuses_a_status_it_does_not_know() -> None:
    assert set(error_responses(404, 412)) == {404, 412}
    with pytest.raises(ValueError, match="418"):
        error_responses(404, 418)


# --- what the service answers is what the document declares -------------------------------------------------


async def test_errors_are_the_declared_model(client: httpx.AsyncClient) -> None:
    created = (await client.post("/productos", json={"nombre": "Mesa", "precio": 2})).json()
    url = f"/productos/{created['id']}"
    answers = [
        await client.get("/productos/999999"),
        await client.put(url, json={"nombre": "Mesa", "precio": 2}, headers={"if-match": '"7"'}),
        await client.post("/productos", content=b"x" * 2_000_000, headers={"content-type": "application/json"}),
    ]
    assert [answer.status_code for answer in answers] == [404, 412, 413]
    for answer in answers:
        assert ErrorBody.model_validate_json(answer.content).model_dump() == answer.json()
    invalid = await client.post("/productos", json={"nombre": "", "precio": 1})
    assert invalid.status_code == 422
    assert all(set(error) == {"loc", "msg", "type"} for error in invalid.json()["detail"])


async def test_a_405_names_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    """Starlette named only the first route's method (``Allow: GET`` for /productos, without POST)."""
    for method, path, allowed in [
        ("OPTIONS", "/productos", "GET, POST"),
        ("PUT", "/productos/", "GET, POST"),
        ("POST", "/productos/1", "GET, PUT, PATCH, DELETE"),
        ("DELETE", "/health", "GET"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 405, (method, path)
        assert response.headers["allow"] == allowed, (method, path)
        assert response.json() == {"detail": "Method Not Allowed"}


# --- PRODUCTOS_DOCS_ENABLED ------------------------------------------------------------------------------------

DOCS_PATHS = ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect")


async def test_docs_are_served_by_default(client: httpx.AsyncClient) -> None:
    for path in DOCS_PATHS:
        assert (await client.get(path)).status_code == 200, path
    assert (await client.get("/openapi.json")).json() == SCHEMA
    assert "/openapi.json" in (await client.get("/docs")).text
    assert "/openapi.json" in (await client.get("/redoc")).text
    assert (await client.get("/")).json()["docs"] == "/docs"


async def test_docs_follow_the_root_path_of_a_proxy(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'productos.db'}"))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, root_path="/api")
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert "/api/openapi.json" in (await client.get("/api/docs")).text
            assert (await client.get("/api/openapi.json")).json()["servers"] == [{"url": "/api"}]


async def test_docs_can_be_turned_off(make_client: ClientFactory) -> None:
    async with make_client(docs_enabled=False) as client:
        for path in DOCS_PATHS:
            response = await client.get(path)
            assert response.status_code == 404, path
            assert response.json() == {"detail": "Not Found"}
        assert "docs" not in (await client.get("/")).json()
        assert (await client.get("/health")).status_code == 200


@pytest.mark.parametrize(("value", "served"), [("off", False), ("false", False), ("on", True)])
async def test_the_docs_setting_comes_from_the_environment(
    value: str, served: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'productos.db'}")
    monkeypatch.setenv("PRODUCTOS_DOCS_ENABLED", value)
    app = create_app()  # settings loaded at start, as in a worker
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            for path in DOCS_PATHS:
                assert ((await client.get(path)).status_code == 200) is served, path
