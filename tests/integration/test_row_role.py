"""Least privilege: the products API runs as a role that may only read and write rows.

``productos migrate``, run as the schema owner (``DATABASE_MIGRATE_URL``), makes ``DATABASE_URL``'s user that role
(``DB_APP_ROLE=auto``); the whole API then serves under gunicorn as it, and a schema change through its login is
refused. On a PostgreSQL cluster that demands passwords (SCRAM over TCP: ``password_cluster``), so that the
password ``productos migrate`` gives the role is the one the service logs in with; in a database and with roles
made for this module and dropped after it. The database logs every statement (``log_statement = 'all'``), and the
password never appears there: the role gets a verifier computed on the client.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from productos.entrypoints.cli import DEFAULT_MIGRATIONS
from productos.infra.db.engine import create_engine
from productos.migrations import RowRole, scram_sha_256_verifier, upgrade_to_head
from productos.services.productos.app import MIGRATIONS
from productos.settings import Settings
from tests.integration.conftest import PasswordCluster
from tests.integration.pg import ADMIN_URL
from tests.integration.servers import Gunicorn

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

#: Characters a URL must escape, and a no-break space that SASLprep turns into a space on both sides.
APP_PASSWORD = "R\u00edo p@ss:/%\u00a0w0rd"
OWNER_PASSWORD = "0wner-pass"


@dataclass(frozen=True)
class Logins:
    cluster: PasswordCluster
    database: str
    owner: str
    app: str

    def url(self, user: str, password: str) -> str:
        return self.cluster.url(user, password, self.database)

    @property
    def owner_url(self) -> str:
        return self.url(self.owner, OWNER_PASSWORD)

    @property
    def app_url(self) -> str:
        return self.url(self.app, APP_PASSWORD)

    def env(self, **more: str) -> dict[str, str]:
        return {"DATABASE_URL": self.app_url, "DATABASE_MIGRATE_URL": self.owner_url, **more}

    async def admin(self) -> asyncpg.Connection:
        """A superuser connection to the module's database (over the trusted Unix socket)."""
        return await asyncpg.connect(
            host="/var/run/postgresql", port=self.cluster.port, user="postgres", database=self.database
        )

    async def as_app(self, password: str = APP_PASSWORD) -> asyncpg.Connection:
        return await asyncpg.connect(
            host="127.0.0.1", port=self.cluster.port, user=self.app, password=password, database=self.database
        )


@pytest.fixture(scope="module")
async def logins(password_cluster: PasswordCluster) -> AsyncIterator[Logins]:
    """An owner with CREATEROLE, its database (every statement logged), and the name of a role that does not
    exist yet: the service's."""
    suffix = os.urandom(4).hex()
    made = Logins(password_cluster, f"rows_{suffix}", f"owner_{suffix}", f"app_{suffix}")
    admin = await password_cluster.admin()
    try:
        await admin.execute(f"CREATE ROLE {made.owner} LOGIN CREATEROLE PASSWORD '{OWNER_PASSWORD}'")
        await admin.execute(f"CREATE DATABASE {made.database} OWNER {made.owner}")
        await admin.execute(f"ALTER DATABASE {made.database} SET log_statement = 'all'")
        yield made
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {made.database} WITH (FORCE)")
        for role in (made.app, made.owner):
            await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


def migrate(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "productos", "migrate", *args],
        cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def cluster_log(cluster: PasswordCluster) -> Path:
    listed = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True).stdout
    for line in listed.splitlines():
        parts = line.split()
        if parts[:2] == [cluster.version, cluster.name]:
            return Path(parts[-1])
    raise AssertionError(f"pg_lsclusters does not list {cluster.name}")


@pytest.fixture(scope="module")
def migrated(logins: Logins, workdir: Path) -> subprocess.CompletedProcess[str]:
    log = cluster_log(logins.cluster)
    logged_before = log.stat().st_size
    done = migrate(workdir, logins.env())
    # What the server logged while the migration ran: every statement of the module's database.
    with log.open("rb") as file:
        file.seek(logged_before)
        done.stderr += "\n--- server log ---\n" + file.read().decode(errors="replace")
    return done


async def test_migrate_makes_the_service_login_a_row_only_role(
    logins: Logins, migrated: subprocess.CompletedProcess[str]
) -> None:
    assert migrated.returncode == 0, migrated.stderr
    assert (
        f"the service's login '{logins.app}' (created, password set): SELECT, INSERT, UPDATE, DELETE" in migrated.stdout
    )
    assert "warning" not in migrated.stderr.partition("--- server log ---")[0]
    admin = await logins.admin()
    try:
        role = await admin.fetchrow(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolpassword FROM pg_authid "
            "WHERE rolname = $1",
            logins.app,
        )
        assert role is not None
        attributes = ("rolcanlogin", "rolsuper", "rolcreaterole", "rolcreatedb", "rolbypassrls")
        assert [role[name] for name in attributes] == [True, False, False, False, False]
        assert role["rolpassword"].startswith("SCRAM-SHA-256$4096:")
        granted = {
            (row["relname"], row["privilege_type"])
            for row in await admin.fetch(
                "SELECT c.relname, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a "
                "WHERE a.grantee = $1::regrole AND c.relnamespace = 'public'::regnamespace",
                logins.app,
            )
        }
        assert granted == {
            ("productos", "SELECT"), ("productos", "INSERT"), ("productos", "UPDATE"), ("productos", "DELETE"),
            ("productos_id_seq", "USAGE"), ("productos_id_seq", "SELECT"),
            ("alembic_version", "SELECT"),
        }  # fmt: skip
    finally:
        await admin.close()
    # The server logged the statement that made the role, with a verifier and never the password.
    server_log = migrated.stderr.partition("--- server log ---")[2]
    assert f'CREATE ROLE "{logins.app}" LOGIN PASSWORD \'SCRAM-SHA-256$4096:' in server_log
    for spelling in (APP_PASSWORD, quote(APP_PASSWORD, safe=""), "p@ss"):
        assert spelling not in server_log and spelling not in migrated.stdout + migrated.stderr.partition("---")[0]


async def test_the_whole_api_serves_as_the_row_only_role(
    logins: Logins, migrated: subprocess.CompletedProcess[str], workdir: Path
) -> None:
    assert migrated.returncode == 0, migrated.stderr
    env = logins.env(DB_POOL_SIZE="2", DB_MAX_OVERFLOW="0", LOG_LEVEL="warning")
    with Gunicorn(workdir, env, workers=2) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            assert (await client.get("/health")).json()["database"] == "connected"
            created = await client.post("/productos", json={"nombre": "Mesa", "precio": 19.99, "stock": 2})
            assert created.status_code == 201, created.text
            producto_id = created.json()["id"]
            assert (await client.get(f"/productos/{producto_id}")).json()["nombre"] == "Mesa"
            assert [p["id"] for p in (await client.get("/productos")).json()] == [producto_id]
            changed = await client.put(f"/productos/{producto_id}", json={"nombre": "Mesa", "precio": 21.5, "stock": 3})
            assert changed.status_code == 200 and changed.json()["precio"] == 21.5, changed.text
            assert (await client.delete(f"/productos/{producto_id}")).status_code == 204
            assert (await client.get(f"/productos/{producto_id}")).status_code == 404
        admin = await logins.admin()
        try:
            users = await admin.fetch(
                "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
                logins.database,
                "productos-api",
            )
        finally:
            await admin.close()
    assert [row["usename"] for row in users] == [logins.app]
    assert " 500 " not in server.output() and "Traceback" not in server.output()


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE intruso (id int)",
        "ALTER TABLE productos ADD COLUMN intruso int",
        "DROP TABLE productos",
        "TRUNCATE productos",
        "CREATE INDEX intruso ON productos (nombre)",
        "COMMENT ON TABLE productos IS 'intruso'",
        "CREATE SCHEMA intruso",
        "UPDATE alembic_version SET version_num = 'intruso'",
        "DELETE FROM alembic_version",
        "ALTER SEQUENCE productos_id_seq RESTART WITH 1",
    ],
)
async def test_a_schema_change_through_the_services_login_is_refused(
    logins: Logins, migrated: subprocess.CompletedProcess[str], statement: str
) -> None:
    assert migrated.returncode == 0, migrated.stderr
    conn = await logins.as_app()
    try:
        assert await conn.fetchval("SELECT current_user") == logins.app
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
        # Its rows and its schema's revision it may read.
        assert await conn.fetchval("SELECT count(*) FROM productos") >= 0
        assert await conn.fetchval("SELECT version_num FROM alembic_version") is not None
    finally:
        await conn.close()


async def grants(logins: Logins) -> list[tuple[str, str]]:
    admin = await logins.admin()
    try:
        rows = await admin.fetch(
            "SELECT relname, relacl::text FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY relname"
        )
        passwords = await admin.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", logins.app)
    finally:
        await admin.close()
    return [(row["relname"], row["relacl"]) for row in rows] + [("password", passwords)]


async def test_migrating_again_from_several_processes_at_once_changes_nothing(
    logins: Logins, migrated: subprocess.CompletedProcess[str], workdir: Path
) -> None:
    assert migrated.returncode == 0, migrated.stderr
    before = await grants(logins)
    runs = await asyncio.gather(*(asyncio.to_thread(migrate, workdir, logins.env()) for _ in range(3)))
    for run in runs:
        assert run.returncode == 0, run.stderr
        # The role exists and its password works: neither made nor set again.
        assert f"the service's login '{logins.app}': SELECT, INSERT, UPDATE, DELETE on 1 table(s)" in run.stdout
    assert await grants(logins) == before


async def test_a_password_the_database_refuses_is_set_again(
    logins: Logins, migrated: subprocess.CompletedProcess[str], workdir: Path
) -> None:
    """The secret was replaced, or the database restored from a snapshot: the next migration repairs the login."""
    assert migrated.returncode == 0, migrated.stderr
    admin = await logins.cluster.admin()
    try:
        await admin.execute(f"ALTER ROLE {logins.app} PASSWORD 'not-the-secrets'")
    finally:
        await admin.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await logins.as_app()
    done = await asyncio.to_thread(migrate, workdir, logins.env())
    assert done.returncode == 0, done.stderr
    assert f"the service's login '{logins.app}' (password set)" in done.stdout
    conn = await logins.as_app()
    await conn.close()


async def test_migrate_waits_behind_another_migration_longer_than_the_statement_timeout(
    logins: Logins, migrated: subprocess.CompletedProcess[str], workdir: Path
) -> None:
    """Another instance's migration holds the lock for longer than DB_STATEMENT_TIMEOUT and DB_LOCK_TIMEOUT:
    this one waits for it instead of failing on a timeout."""
    assert migrated.returncode == 0, migrated.stderr
    key = zlib.crc32(f"{DEFAULT_MIGRATIONS}/alembic_version".encode())
    holder = await logins.admin()
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", key)
        started = time.monotonic()
        waiting = subprocess.Popen(
            [sys.executable, "-m", "productos", "migrate"],
            cwd=workdir,
            env={**os.environ, **logins.env(DB_STATEMENT_TIMEOUT="1", DB_LOCK_TIMEOUT="0.5")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        await asyncio.sleep(4)
        assert waiting.poll() is None, waiting.communicate()
        await holder.execute("SELECT pg_advisory_unlock($1)", key)
    finally:
        await holder.close()
    out, err = await asyncio.to_thread(waiting.communicate, timeout=60)
    assert waiting.returncode == 0, err
    assert time.monotonic() - started >= 4
    assert "database upgraded to head" in out


async def test_db_app_role_none_makes_no_role(
    logins: Logins, migrated: subprocess.CompletedProcess[str], workdir: Path
) -> None:
    assert migrated.returncode == 0, migrated.stderr
    other = f"other_{os.urandom(4).hex()}"
    done = await asyncio.to_thread(
        migrate,
        workdir,
        {"DATABASE_URL": logins.url(other, "pw"), "DATABASE_MIGRATE_URL": logins.owner_url, "DB_APP_ROLE": "none"},
    )
    assert done.returncode == 0, done.stderr
    assert "the service's login" not in done.stdout
    admin = await logins.cluster.admin()
    try:
        assert await admin.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", other) == 0
    finally:
        await admin.close()


# --- the parts on their own ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "pencil",
        "contrase\u00f1a",
        "R\u00edo p@ss:/%\u00a0w0rd",  # a no-break space: SASLprep maps it to a space
        "I\u00adX",  # a soft hyphen: mapped to nothing
        "\u2168",  # a Roman numeral: NFKC makes it IX
        "\u0007bell",  # prohibited: PostgreSQL uses the password as it is
        "\u0627\u0031",  # right-to-left then a digit: prohibited likewise
    ],
)
async def test_the_verifier_is_the_one_postgresql_makes_for_the_same_salt(password: str) -> None:
    """PostgreSQL hashes a plain password itself when given one: our verifier, with its salt and iterations,
    must be the same string."""
    name = f"scram_{os.urandom(4).hex()}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute("SET password_encryption = 'scram-sha-256'")
        literal = await admin.fetchval("SELECT quote_literal($1::text)", password)
        await admin.execute(f"CREATE ROLE {name} PASSWORD {literal}")
        stored = await admin.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", name)
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.close()
    iterations, salt = stored.removeprefix("SCRAM-SHA-256$").split("$")[0].split(":")
    assert scram_sha_256_verifier(password, salt=base64.b64decode(salt), iterations=int(iterations)) == stored


async def test_no_role_on_sqlite(tmp_path: Path) -> None:
    engine = create_engine(Settings(database_url=f"sqlite:///{tmp_path / 'app.db'}"))
    try:
        report = await upgrade_to_head(
            engine, script_location=MIGRATIONS.script_location, row_role=RowRole("app", password="pw")
        )
    finally:
        await engine.dispose()
    assert report is None
