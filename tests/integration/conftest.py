"""Fixtures of the settings tests: moto's server over real HTTP, a PostgreSQL that demands passwords.

moto: one ``ThreadedMotoServer`` on 127.0.0.1 (a free port) for the session; ``aws`` points the process at it
through the standard variables (``AWS_ENDPOINT_URL``, fake credentials, ``AWS_REGION``) and resets its state.
Tests seed it with boto3 (``aws.ssm``, ``aws.secretsmanager``); productos reads it through aioboto3.

Server processes: ``workdir`` and ``database_url`` give a module a scratch directory and a migrated PostgreSQL
database of its own; ``tests.integration.servers.Gunicorn`` starts gunicorn there.

PostgreSQL: the server of the other suites trusts local connections, so ``password_cluster`` creates a cluster
of its own with ``pg_createcluster`` (scram-sha-256 over TCP, trust over the Unix socket for administration),
on a free port, started with ``pg_ctlcluster``; it drops it at the end, and drops clusters left over by
interrupted runs first. It needs root (or the postgres user) and the Debian ``postgresql-common`` tools.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import pytest
from moto.server import ThreadedMotoServer

from productos.settings import env_names
from tests.integration.pg import scratch_database
from tests.integration.tcp_proxy import free_port as free_port  # re-exported: the settings tests import it here
from tests.integration.throwaway_cluster import drop_cluster, process_alive

REGION = "us-east-1"
CLUSTER_PREFIX = "productos_pw_"
SOCKET_DIR = "/var/run/postgresql"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A scratch directory for the module's server processes (their working directory and log files)."""
    return tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])


@pytest.fixture(scope="module")
def database_url(workdir: Path) -> Iterator[str]:
    """A PostgreSQL database of the module's own, migrated with ``productos migrate``; dropped at the end."""
    with scratch_database(workdir) as url:
        yield url


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on 127.0.0.1 for the session."""
    # werkzeug logs every request moto serves; the output tests read our logs only.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def moto_post(endpoint: str, path: str, body: bytes = b"") -> None:
    request = urllib.request.Request(
        f"{endpoint}{path}", data=body, method="POST", headers={"Content-Type": "application/octet-stream"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


@dataclass
class Aws:
    """The moto server and boto3 clients to seed it (test set-up only; productos uses aioboto3)."""

    endpoint: str
    ssm: Any
    secretsmanager: Any
    iam: Any

    def put_parameters(self, values: dict[str, str], *, kind: str = "SecureString") -> None:
        for name, value in values.items():
            self.ssm.put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)

    def put_secret(self, name: str, value: dict[str, Any] | str) -> str:
        text = value if isinstance(value, str) else json.dumps(value)
        try:
            return str(self.secretsmanager.create_secret(Name=name, SecretString=text)["ARN"])
        except self.secretsmanager.exceptions.ResourceExistsException:
            self.secretsmanager.put_secret_value(SecretId=name, SecretString=text)
            return str(self.secretsmanager.describe_secret(SecretId=name)["ARN"])


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Aws]:
    """A clean moto, and a process configured the standard way to reach it; no productos setting set."""
    moto_post(moto_endpoint, "/moto-api/reset")
    for key in list(os.environ):
        if key.upper() in env_names() or key.startswith(("AWS_", "PRODUCTOS_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    # No developer's ~/.aws may leak in.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.chdir(tmp_path)

    def client(service: str) -> Any:
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=moto_endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    yield Aws(moto_endpoint, client("ssm"), client("secretsmanager"), client("iam"))
    moto_post(moto_endpoint, "/moto-api/reset-auth", b"inf")


# --- a PostgreSQL cluster that demands passwords ------------------------------------------------------------


@dataclass(frozen=True)
class PasswordCluster:
    version: str
    name: str
    port: int

    async def admin(self) -> asyncpg.Connection:
        """A superuser connection over the Unix socket (trusted), for set-up and password changes."""
        return await asyncpg.connect(host=SOCKET_DIR, port=self.port, user="postgres", database="postgres")

    def url(self, user: str, password: str, database: str) -> str:
        from urllib.parse import quote

        return f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}/{database}"


def _clusters() -> list[tuple[str, str, int, str]]:
    out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            rows.append((parts[0], parts[1], int(parts[2]), parts[3]))
    return rows


@pytest.fixture(scope="session")
def password_cluster() -> Iterator[PasswordCluster]:
    if shutil.which("pg_createcluster") is None:
        pytest.fail("pg_createcluster (postgresql-common) is needed for the rotation tests", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the rotation tests create a PostgreSQL cluster: run them as root", pytrace=False)
    clusters = _clusters()
    # Idempotent: clusters of interrupted runs (their pytest process is gone) are dropped first.
    for version, name, _, _ in clusters:
        match = re.fullmatch(rf"{CLUSTER_PREFIX}(\d+)", name)
        if match and not process_alive(int(match.group(1))):
            drop_cluster(version, name)
    version = max((row[0] for row in clusters), key=float, default=None) or sorted(os.listdir("/etc/postgresql"))[-1]
    name = f"{CLUSTER_PREFIX}{os.getpid()}"
    drop_cluster(version, name)
    port = free_port()
    try:
        subprocess.run(
            ["pg_createcluster", version, name, "-p", str(port), "--start-conf=manual", "--",
             "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"],
            capture_output=True, check=True, timeout=120,
        )  # fmt: skip
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start"],
            capture_output=True, check=True, timeout=60,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        drop_cluster(version, name)
        pytest.fail(f"could not create a PostgreSQL cluster: {exc.stderr.decode(errors='replace')}", pytrace=False)
    try:
        yield PasswordCluster(version, name, port)
    finally:
        drop_cluster(version, name)


@pytest.fixture
async def app_database(password_cluster: PasswordCluster) -> AsyncIterator[tuple[str, str]]:
    """A database and a login role of its own in the password cluster: (database, role)."""
    suffix = os.urandom(4).hex()
    database, role = f"app_{suffix}", f"app_{suffix}"
    admin = await password_cluster.admin()
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'initial-not-used'")
        await admin.execute(f"CREATE DATABASE {database} OWNER {role}")
        yield database, role
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


async def set_password(cluster: PasswordCluster, role: str, password: str) -> None:
    admin = await cluster.admin()
    try:
        # Passwords are quoted with format('%L') server-side: they may hold any character.
        literal = await admin.fetchval("SELECT quote_literal($1::text)", password)
        await admin.execute(f"ALTER ROLE {role} PASSWORD {literal}")
    finally:
        await admin.close()
