"""Property: no JSON body sent to POST, PUT or PATCH makes the service answer with a 5xx."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from productos import Settings
from tests.e2e.conftest import serve

huge_ints = st.integers(min_value=-(10**400), max_value=10**400)
floats = st.floats(allow_nan=True, allow_infinity=True)
json_scalars = st.none() | st.booleans() | st.integers() | huge_ints | floats | st.text(max_size=50)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=15,
)
field_values = (
    json_values
    | st.text(min_size=190, max_size=260)
    | st.sampled_from(["", " ", "0", "19.99", "1e309", "NaN", "-Infinity", "0.001", "\x00", "99999999.99"])
    | st.decimals(allow_nan=False, allow_infinity=False, places=3).map(float)
    | st.integers(min_value=-(2**64), max_value=2**64)
)
product_like = st.fixed_dictionaries(
    {},
    optional={
        "nombre": field_values,
        "descripcion": field_values,
        "precio": field_values,
        "stock": field_values,
        "id": field_values,
        "version": field_values,
    },
)
cents = st.decimals(min_value=Decimal("-1.00"), max_value=Decimal("100000000.00"), places=2)
precios = cents.map(float) | cents.map(str) | st.integers(min_value=-5, max_value=10**9) | floats
# Bodies that pass validation often enough to reach the domain and the database with odd but valid values.
near_valid = st.fixed_dictionaries(
    {"nombre": st.text(min_size=1, max_size=205), "precio": precios},
    optional={
        "descripcion": st.none() | st.text(max_size=300),
        "stock": st.integers(min_value=-5, max_value=2**31 + 5) | huge_ints | st.booleans(),
    },
)
bodies = json_values | product_like | near_valid


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ],
)
def fuzz_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        database: Path = tmp_path_factory.mktemp("fuzz") / "productos.db"
        return f"sqlite:///{database}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(scope="module")
async def fuzz_client(fuzz_database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, int]]:
    """One app for every example (module-scoped: built once, not per example)."""
    async with serve(Settings(database_url=fuzz_database_url)) as client:
        created = await client.post("/productos", json={"nombre": "Mesa", "precio": 1})
        assert created.status_code == 201
        yield client, created.json()["id"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=bodies,
    method=st.sampled_from(["POST", "PUT", "PATCH"]),
    target=st.sampled_from(["existing", "missing"]),
)
async def test_random_json_bodies_never_cause_a_server_error(
    fuzz_client: tuple[httpx.AsyncClient, int], body: Any, method: str, target: str
) -> None:
    client, existing = fuzz_client
    path = "/productos" if method == "POST" else f"/productos/{existing if target == 'existing' else 987654}"
    content = json.dumps(body, allow_nan=True).encode()
    response = await client.request(method, path, content=content, headers={"content-type": "application/json"})
    event(f"{method} {target} -> {response.status_code}")
    assert response.status_code < 500, response.text
    if response.status_code == 422:
        detail = response.json()["detail"]
        assert all(set(error) == {"loc", "msg", "type"} for error in detail)
    if response.status_code in {200, 201}:
        stored = response.json()
        assert 0 < stored["precio"] <= 99999999.99
        assert 0 <= stored["stock"] <= 2**31 - 1
        assert 1 <= len(stored["nombre"]) <= 200


@settings(max_examples=100, deadline=None)
@given(content=st.binary(max_size=300), method=st.sampled_from(["POST", "PUT", "PATCH"]))
async def test_random_bytes_never_cause_a_server_error(
    fuzz_client: tuple[httpx.AsyncClient, int], content: bytes, method: str
) -> None:
    client, existing = fuzz_client
    path = "/productos" if method == "POST" else f"/productos/{existing}"
    response = await client.request(method, path, content=content, headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text


# --- every numeric input and header, up to and beyond each column's range ------------------------------------

#: The edges of every column and parameter: INTEGER (stock, version), BIGINT (id, after), and past them.
edges = st.sampled_from(
    [0, 1, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64]
)
edges |= st.sampled_from([10**18 - 1, 10**18, 10**19, 10**100, 1000, 1001])
numbers = edges | st.integers(min_value=-(2**70), max_value=2**70) | huge_ints
number_texts = (
    numbers.map(str)
    | st.text(alphabet="0123456789-+ .eE_x", max_size=25)
    | st.sampled_from(["", "1e3", "NaN", "inf", "0x10", "²", "١٢٣", "1_000", " 7", "007", "9" * 5000])
)
header_texts = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80
)
etags = (
    numbers.map(lambda n: f'"{n}"')
    | numbers.map(lambda n: f'W/"{n}"')
    | numbers.map(str)
    | st.sampled_from(["*", '""', '"abc"', "W/", '"1", "2"', '"²"', '"' + "9" * 5000 + '"'])
    | header_texts
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "if-match": etags,
        "x-request-id": header_texts,
        "x-amzn-trace-id": header_texts,
        "traceparent": header_texts,
        "x-forwarded-for": header_texts,
        "accept": header_texts,
    },
)


#: Valid often enough that a write reaches the database with the odd If-Match beside it.
stocks = st.integers(min_value=0, max_value=2**31 - 1) | numbers
precios_or_numbers = cents.map(float) | numbers
versions = st.sampled_from(["999999999999999999", "2147483647", "2147483648", "0", "1"])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "PUT", "PATCH", "DELETE"]),
    target=st.just("existing") | number_texts,
    sent=headers | versions.map(lambda v: {"if-match": f'"{v}"'}),
    stock=stocks,
    precio=precios_or_numbers,
)
@example(method="PUT", target="existing", sent={"if-match": '"999999999999999999"'}, stock=1, precio=1.0)
@example(method="PATCH", target="existing", sent={"if-match": '"2147483648"'}, stock=1, precio=1.0)
@example(method="DELETE", target="existing", sent={"if-match": 'W/"999999999999999999"'}, stock=0, precio=0)
async def test_numbers_and_headers_beyond_every_range_never_cause_a_server_error(
    fuzz_client: tuple[httpx.AsyncClient, int],
    method: str,
    target: str,
    sent: dict[str, str],
    stock: int,
    precio: float,
) -> None:
    client, existing = fuzz_client
    path = f"/productos/{existing if target == 'existing' else target}"
    raw_headers = {name: value.encode("latin-1") for name, value in sent.items()}
    content = None
    if method in {"PUT", "PATCH"}:
        content = json.dumps({"nombre": "Mesa", "precio": precio, "stock": stock}, allow_nan=True).encode()
        raw_headers["content-type"] = b"application/json"
    response = await client.request(method, path, content=content, headers=raw_headers)
    event(f"{method} {'existing' if target == 'existing' else 'other'} -> {response.status_code}")
    assert response.status_code < 500, response.text
    if response.status_code == 404 and target == "existing" and method == "DELETE":
        # A DELETE whose If-Match matched removed it: the next examples need it back.
        created = await client.post("/productos", json={"nombre": "Mesa", "precio": 1})
        assert created.status_code == 201


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(after=number_texts, limit=number_texts, sent=headers)
async def test_page_parameters_beyond_every_range_never_cause_a_server_error(
    fuzz_client: tuple[httpx.AsyncClient, int], after: str, limit: str, sent: dict[str, str]
) -> None:
    client, _ = fuzz_client
    raw_headers = {name: value.encode("latin-1") for name, value in sent.items()}
    response = await client.get("/productos", params={"after": after, "limit": limit}, headers=raw_headers)
    assert response.status_code < 500, response.text
