"""``productos check`` as an operator runs it: a subprocess, a verdict, a hint per failure, no secret printed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.pg import ADMIN_URL, scratch_database
from tests.integration.tcp_proxy import free_port

SECRET = "pa55-@:/?#%-word"


def _check(workdir: Path, database_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "PRODUCTOS_"))}
    return subprocess.run(
        [sys.executable, "-m", "productos", "check", *extra],
        cwd=workdir,
        # WORKERS fixed: its default, the machine's CPUs, decides the connection budget's worst case.
        env={**env, "DATABASE_URL": database_url, "DB_CONNECT_TIMEOUT": "1", "WORKERS": "2"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _with_password(url: str) -> str:
    from urllib.parse import quote

    return url.replace("postgresql://postgres@", f"postgresql://postgres:{quote(SECRET, safe='')}@")


@pytest.fixture(scope="module")
def migrated_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scratch_database(tmp_path_factory.mktemp("check")) as url:
        yield url


@pytest.mark.postgres
def test_healthy_postgres_passes_with_timings(tmp_path: Path, migrated_url: str) -> None:
    result = _check(tmp_path, _with_password(migrated_url), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "ok"
    assert [step["name"] for step in report["checks"]] == [
        "dns", "tcp", "login", "query", "limits", "budget", "schema",
    ]  # fmt: skip
    limits = next(step for step in report["checks"] if step["name"] == "limits")
    assert limits["detail"].endswith("set at login") and "statement_timeout 4500 ms" in limits["detail"]
    assert all(step["ms"] is not None and step["ms"] >= 0 for step in report["checks"])
    database = next(row for row in report["settings"] if row["name"] == "DATABASE_URL")
    assert database["source"] == "env" and "***" in database["value"]
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.postgres
def test_unmigrated_database_fails_and_says_to_migrate(tmp_path: Path) -> None:
    result = _check(tmp_path, ADMIN_URL)
    assert result.returncode == 1
    assert "FAIL  schema" in result.stdout and "productos migrate" in result.stdout
    assert result.stdout.rstrip().endswith("verdict: FAILED")


def test_refused_port_points_at_the_port(tmp_path: Path) -> None:
    port = free_port()
    result = _check(tmp_path, _with_password(f"postgresql://postgres@127.0.0.1:{port}/test"))
    assert result.returncode == 1
    assert "FAIL  tcp" in result.stdout and f"nothing listens on {port}" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_tcp_timeout_points_at_the_security_group(tmp_path: Path) -> None:
    # A listening socket whose backlog is full never completes new handshakes: a black-holed route.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            result = _check(tmp_path, f"postgresql://postgres@127.0.0.1:{port}/test")
        finally:
            for filler in fillers:
                filler.close()
    assert result.returncode == 1
    assert "security group" in result.stdout, result.stdout


def test_unresolvable_host_points_at_dns(tmp_path: Path) -> None:
    result = _check(tmp_path, "postgresql://postgres@productos-no-such-host.invalid:5432/test")
    assert result.returncode == 1
    assert "FAIL  dns" in result.stdout and "does not resolve" in result.stdout


@pytest.mark.postgres
def test_unknown_role_is_a_login_failure_with_a_hint(tmp_path: Path) -> None:
    from urllib.parse import quote

    result = _check(tmp_path, ADMIN_URL.replace("postgres@", f"nobody_here:{quote(SECRET, safe='')}@"))
    assert result.returncode == 1
    assert "FAIL  login" in result.stdout and "does not exist" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_unescaped_password_is_a_clear_configuration_error(tmp_path: Path) -> None:
    result = _check(tmp_path, f"postgresql://postgres:{SECRET}@127.0.0.1:5432/test")
    assert result.returncode == 3
    assert "DATABASE_URL" in result.stdout and "URL-escape" in result.stdout
    assert "Traceback" not in result.stderr
    assert "pa55" not in result.stdout + result.stderr


def test_embedded_default_passes(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "productos", "migrate"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        check=True,
        capture_output=True,
    )
    result = _check(tmp_path, "sqlite:///./productos.db")
    assert result.returncode == 0, result.stdout
    assert "migrations at head" in result.stdout


def test_invalid_setting_exits_3_and_names_it(tmp_path: Path) -> None:
    env = {**os.environ, "DB_POOL_SIZE": "lots", "DATABASE_URL": "sqlite:///./x.db"}
    result = subprocess.run(
        [sys.executable, "-m", "productos", "check"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 3
    assert "DB_POOL_SIZE" in result.stdout + result.stderr


def test_a_first_run_of_the_embedded_default_says_what_serve_will_do(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "productos", "check"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "does not exist yet: `productos serve` creates it and applies the migrations" in result.stdout
    assert "schema at nothing" not in result.stdout
    assert not (tmp_path / "productos.db").exists()  # check never creates the database it inspects


def test_a_failed_migration_names_its_cause_and_a_hint(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/test", "DB_CONNECT_TIMEOUT": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "productos", "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "cannot reach the database (" in result.stderr and "hint: `productos check`" in result.stderr
