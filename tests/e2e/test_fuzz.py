"""Property: no JSON body sent to POST, PUT or PATCH makes the service answer with a 5xx."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
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
