"""The second service (examples/pedidos), built on productos as a library, under gunicorn on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.servers import Gunicorn

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PEDIDOS = Path(__file__).resolve().parents[2] / "examples" / "pedidos"


@pytest.fixture(scope="module")
def env(workdir: Path, database_url: str) -> dict[str, str]:
    """The module's database (products migrated), with the pedidos tables migrated beside them."""
    env = {"DATABASE_URL": database_url, "PYTHONPATH": str(PEDIDOS)}
    migrate = [
        sys.executable,
        "-m",
        "productos",
        "migrate",
        "--script-location",
        "pedidos:migrations",
        "--version-table",
        "pedidos_alembic_version",
    ]
    subprocess.run(migrate, cwd=workdir, env={**os.environ, **env}, check=True, capture_output=True)
    return env


def test_pedidos_crud_health_and_metrics_under_gunicorn(tmp_path: Path, env: dict[str, str]) -> None:
    with (
        Gunicorn(tmp_path, env, app="pedidos.main:app") as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        assert client.get("/health").json() == {
            "status": "healthy",
            "service": "pedidos-api",
            "database": "connected",
        }
        assert client.get("/").json()["message"] == "Bienvenido a pedidos-api"

        ids = []
        for n in range(3):
            created = client.post("/pedidos", json={"producto_id": 10 + n, "cantidad": n + 1})
            assert created.status_code == 201, created.text
            assert created.json()["estado"] == "pendiente"
            ids.append(created.json()["id"])
        first = client.get("/pedidos/", params={"limit": 2})
        assert [p["id"] for p in first.json()] == ids[:2]
        second = client.get(first.links["next"]["url"])
        assert [p["id"] for p in second.json()] == ids[2:] and "link" not in second.headers

        url = f"/pedidos/{ids[0]}"
        assert client.patch(url, json={"estado": "enviado"}).status_code == 409
        assert client.patch(url, json={"estado": "pagado"}).json()["estado"] == "pagado"
        assert client.patch(url, json={"estado": "enviado"}).json()["estado"] == "enviado"
        refused = client.patch(url, json={"estado": "cancelado"})
        assert refused.status_code == 409 and "enviado" in refused.json()["detail"]
        assert client.get(url).json()["estado"] == "enviado"

        assert client.get("/pedidos/999999").status_code == 404
        assert client.get(f"/pedidos/{2**70}").status_code == 404
        assert client.post("/pedidos", json={"producto_id": 1, "cantidad": 0}).status_code == 422
        assert client.patch(url, json={"estado": "perdido"}).status_code == 422

        metrics = client.get("/metrics").text
        assert 'http_route="/pedidos/{pedido_id}"' in metrics
        assert "db_client_connection_max" in metrics
        assert "db_client_operation_duration_seconds" in metrics
    output = server.output()
    assert '"logger":"productos.access"' in output and '"http.route":"/pedidos/{pedido_id}"' in output


def test_pedidos_life_cycle_rules() -> None:
    sys.path.insert(0, str(PEDIDOS))
    try:
        from pedidos.domain import Estado, NewPedido, check_transition
    finally:
        sys.path.remove(str(PEDIDOS))
    from productos.domain import ConflictError, DomainValidationError

    check_transition(Estado.PENDIENTE, Estado.PAGADO)
    check_transition(Estado.PAGADO, Estado.CANCELADO)
    for current, target in [(Estado.ENVIADO, Estado.CANCELADO), (Estado.CANCELADO, Estado.PAGADO)]:
        with pytest.raises(ConflictError):
            check_transition(current, target)
    for bad in [{"producto_id": 0, "cantidad": 1}, {"producto_id": 1, "cantidad": 0}]:
        with pytest.raises(DomainValidationError):
            NewPedido(**bad)
