"""``productos new``: the scaffolded service passes its own tests (on the fake, SQLite and PostgreSQL) and
serves under gunicorn on PostgreSQL, with the runtime every productos service gets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from productos.entrypoints.new import render_service
from tests.integration.pg import scratch_database
from tests.integration.servers import Gunicorn

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("scaffold") / "facturas"
    made = run([sys.executable, "-m", "productos", "new", "facturas", "--dir", str(target)], target.parent, {})
    assert made.returncode == 0, made.stderr
    assert "created" in made.stdout
    return target


def test_the_scaffold_writes_a_whole_service(project: Path) -> None:
    names = {path.relative_to(project).as_posix() for path in project.rglob("*") if path.is_file()}
    assert {
        "README.md",
        "pyproject.toml",
        "facturas/domain.py",
        "facturas/ports.py",
        "facturas/repository.py",
        "facturas/service.py",
        "facturas/api.py",
        "facturas/main.py",
        "facturas/testing.py",
        "facturas/migrations/env.py",
        "facturas/migrations/versions/0001_create.py",
        "tests/conftest.py",
        "tests/test_contract.py",
        "tests/test_api.py",
    } <= names
    assert not any("{{" in (project / name).read_text() for name in names)
    readme = (project / "README.md").read_text()
    assert "gunicorn -c python:productos.gunicorn_conf facturas.main:app" in readme
    assert "--version-table facturas_alembic_version" in readme


def test_the_scaffold_passes_its_own_tests(project: Path) -> None:
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], project, {})
    assert result.returncode == 0, result.stdout + result.stderr
    # 4 contract tests x (memory, sqlite, postgres) + the API test: none skipped.
    assert "13 passed" in result.stdout and "skipped" not in result.stdout, result.stdout


def test_the_scaffold_serves_under_gunicorn_on_postgresql(project: Path, tmp_path: Path) -> None:
    with scratch_database(tmp_path) as url:
        env = {"DATABASE_URL": url, "PYTHONPATH": str(project)}
        migrate = [
            sys.executable,
            "-m",
            "productos",
            "migrate",
            "--script-location",
            "facturas:migrations",
            "--version-table",
            "facturas_alembic_version",
        ]
        migrated = run(migrate, tmp_path, env)
        assert migrated.returncode == 0, migrated.stderr
        with (
            Gunicorn(tmp_path, env, app="facturas.main:app") as server,
            httpx.Client(base_url=server.base_url) as client,
        ):
            health = client.get("/health").json()
            assert health == {"status": "healthy", "service": "facturas-api", "database": "connected"}
            created = client.post("/facturas", json={"nombre": "Primera"})
            assert created.status_code == 201, created.text
            url_one = f"/facturas/{created.json()['id']}"
            assert client.get(url_one).json()["nombre"] == "Primera"
            assert client.put(url_one, json={"nombre": "Renombrada"}).json()["nombre"] == "Renombrada"
            assert client.get("/facturas").json()[0]["nombre"] == "Renombrada"
            assert client.delete(url_one).status_code == 204
            assert client.get(url_one).status_code == 404
            assert 'http_route="/facturas/{factura_id}"' in client.get("/metrics").text


def test_new_refuses_names_that_cannot_be_a_package(tmp_path: Path) -> None:
    for name, problem in [
        ("Facturas", "lowercase Python identifier"),
        ("class", "lowercase Python identifier"),
        ("asyncio", "already an importable module"),
    ]:
        with pytest.raises(ValueError, match=problem):
            render_service(name, tmp_path / name)
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        render_service("clientes", tmp_path / "taken")
    assert not (tmp_path / "Facturas").exists()
