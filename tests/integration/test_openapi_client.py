"""A client generated from the live ``/openapi.json`` by openapi-python-client runs CRUD against the live service.

The service runs under gunicorn with the tuned configuration on PostgreSQL; the generator reads the document
from it over HTTP, as a user would, and must generate without a warning. The client is then imported and used
with ``raise_on_unexpected_status``, so that every status the service answered is one its schema declares.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.integration.servers import Gunicorn

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PACKAGE = "productos_api_client"


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Gunicorn]:
    env = {"DATABASE_URL": database_url, "DB_POOL_SIZE": "2", "DB_MAX_OVERFLOW": "0"}
    with Gunicorn(tmp_path, env, workers=1) as server:
        yield server


@pytest.fixture
def generated(server: Gunicorn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The client package generated from the server's document, importable for the test."""
    # No post hooks: the generator would run ruff over its output, which the test extra does not install.
    config = tmp_path / "openapi-python-client.yaml"
    config.write_text("post_hooks: []\n")
    command = [
        sys.executable,
        "-m",
        "openapi_python_client",
        "generate",
        "--url",
        f"{server.base_url}/openapi.json",
        "--meta",
        "none",
        "--config",
        str(config),
        "--output-path",
        str(tmp_path / PACKAGE),
        "--fail-on-warning",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_a_generated_client_runs_crud_against_the_live_service(server: Gunicorn, generated: ModuleType) -> None:
    api = "api.productos"
    create, get, list_, replace, update, delete = (
        _module(f"{api}.productos_{action}") for action in ("create", "get", "list", "replace", "update", "delete")
    )
    models = _module("models")
    health = _module("api.health.health")

    with generated.Client(base_url=server.base_url, raise_on_unexpected_status=True, timeout=10) as client:
        ready = health.sync(client=client)
        assert isinstance(ready, models.HealthStatus)
        assert ready.status == models.HealthStatusStatus.HEALTHY

        created = create.sync_detailed(
            client=client, body=models.ProductoIn(nombre="Mesa", descripcion="Roble", precio=19.99, stock=3)
        )
        assert created.status_code == 201
        mesa = created.parsed
        assert isinstance(mesa, models.ProductoOut)
        assert (mesa.nombre, mesa.descripcion, mesa.precio, mesa.stock, mesa.version) == ("Mesa", "Roble", 19.99, 3, 1)
        assert created.headers["etag"] == '"1"'

        fetched = get.sync(client=client, producto_id=mesa.id)
        assert isinstance(fetched, models.ProductoOut) and fetched.to_dict() == mesa.to_dict()
        page = list_.sync(client=client, limit=10)
        assert [p.id for p in page] == [mesa.id]

        replaced = replace.sync(
            client=client,
            producto_id=mesa.id,
            body=models.ProductoIn(nombre="Mesa grande", precio=25.5, stock=1),
            if_match='"1"',
        )
        assert isinstance(replaced, models.ProductoOut)
        assert (replaced.nombre, replaced.descripcion, replaced.precio, replaced.version) == (
            "Mesa grande",
            None,
            25.5,
            2,
        )

        stale = replace.sync_detailed(
            client=client, producto_id=mesa.id, body=models.ProductoIn(nombre="Otra", precio=1), if_match='"1"'
        )
        assert stale.status_code == 412
        assert isinstance(stale.parsed, models.ErrorBody) and "version" in stale.parsed.detail

        patched = update.sync(client=client, producto_id=mesa.id, body=models.ProductoPatchIn(stock=7))
        assert isinstance(patched, models.ProductoOut)
        assert (patched.nombre, patched.stock, patched.version) == ("Mesa grande", 7, 3)

        invalid = create.sync_detailed(client=client, body=models.ProductoIn(nombre="Silla", precio=1.005))
        assert invalid.status_code == 422
        assert isinstance(invalid.parsed, models.HTTPValidationError)
        assert [error.loc for error in invalid.parsed.detail] == [["body", "precio"]]

        deleted = delete.sync_detailed(client=client, producto_id=mesa.id, if_match='"3"')
        assert deleted.status_code == 204
        missing = get.sync_detailed(client=client, producto_id=mesa.id)
        assert missing.status_code == 404
        assert isinstance(missing.parsed, models.ErrorBody) and missing.parsed.detail.endswith("no encontrado")
