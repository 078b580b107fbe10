"""The service's row-only login: made and granted by a migration run as the schema owner.

CloudFormation (and most provisioning) cannot create PostgreSQL roles, so ``productos migrate``, which logs in as
the schema owner (``DATABASE_MIGRATE_URL``), makes the login the service runs as (``DATABASE_URL``'s user) and
grants it what a request needs and nothing more: ``SELECT, INSERT, UPDATE, DELETE`` on the tables the owner's
migrations made, ``USAGE, SELECT`` on their sequences, ``SELECT`` alone on the Alembic version table, and the
same by default on what the owner creates later. No ``CREATE``, no ``TRUNCATE``, no ``TRIGGER``: a schema change
through the service's login is refused (SQLSTATE 42501).

The password is never sent to the server: a role created or repaired here gets a SCRAM-SHA-256 verifier computed
on the client, as ``psql``'s ``\\password`` does, so server logs (``log_statement = 'ddl'``) hold no password.
An existing role keeps its password unless the database refuses it (``RowRole.login_url``): a secret that was
replaced, or a database restored from a snapshot, is repaired on the next migration, and a role a DBA made,
whose password works, is left alone.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import stringprep
import time
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from productos.domain.errors import ConcurrentUpdateError, ConfigurationError
from productos.infra.db.url import parse_database_url
from productos.settings import Settings

__all__ = [
    "RowRole",
    "RowRoleReport",
    "advisory_lock",
    "grant_row_role",
    "login_refused",
    "scram_sha_256_verifier",
]

logger = logging.getLogger(__name__)

#: The table privileges of a row-only role; those it must not hold on a table it may write.
ROW_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
_NOT_ROW_PRIVILEGES = "TRUNCATE, REFERENCES, TRIGGER"
#: One lock for every grant made in a database, whichever service's migration makes it: GRANT and ALTER DEFAULT
#: PRIVILEGES on one object from two sessions at once can fail with "tuple concurrently updated".
_GRANTS_LOCK = zlib.crc32(b"productos:row-role-grants")
#: PostgreSQL's defaults for the verifiers it makes itself (scram_iterations, SCRAM_DEFAULT_SALT_LEN).
_SCRAM_ITERATIONS = 4096
_SCRAM_SALT_BYTES = 16
#: Relation kinds GRANT ... ON ALL TABLES covers (tables, partitioned tables, views, materialized views, foreign
#: tables), and sequences.
_TABLE_KINDS = ("r", "p", "v", "m", "f")


@dataclass(frozen=True)
class RowRole:
    """The login the service runs as, limited to reading and writing rows.

    Args:
        name: the role (``DATABASE_URL``'s user), exactly as it logs in: always quoted, never case-folded.
        password: its password; set, as a SCRAM-SHA-256 verifier, when the role is created or the database
            refuses it. ``None``: a role created without one (IAM authentication, a trusted network).
        login_url: where to check that ``password`` works: the migration's own database server, logged in as
            this role (``DATABASE_MIGRATE_URL``'s host with ``DATABASE_URL``'s user and password). ``None``: the
            password is set only when the role is created.
        iam: grant ``rds_iam`` (RDS IAM authentication straight to the database, ``DB_IAM_AUTH`` without a
            pooler; behind RDS Proxy the proxy logs in with the secret, so the role must keep its password).
    """

    name: str
    password: str | None = field(default=None, repr=False)
    login_url: str | None = field(default=None, repr=False)
    iam: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigurationError("the row-only role needs a name: DATABASE_URL's user")

    @classmethod
    def from_settings(cls, settings: Settings) -> RowRole | None:
        """The row-only role the settings ask for, or ``None``.

        ``DB_APP_ROLE=auto`` (the default): ``DATABASE_URL``'s user, when ``DATABASE_MIGRATE_URL`` is set and logs
        in as another user, both on PostgreSQL. ``DB_APP_ROLE=none``: no role is managed (a DBA grants it).
        """
        if settings.db_app_role == "none" or settings.database_migrate_url is None:
            return None
        app_raw = settings.database_url.get_secret_value()
        owner_raw = settings.database_migrate_url.get_secret_value()
        app, owner = parse_database_url(app_raw).url, parse_database_url(owner_raw).url
        if app.get_backend_name() != "postgresql" or owner.get_backend_name() != "postgresql":
            return None
        if not app.username or app.username == owner.username:
            return None
        login_url = None
        if app.password is not None:
            # The owner's server, straight (not through a pooler), as the service's login.
            direct = make_url(owner_raw.strip()).set(username=app.username, password=app.password)
            login_url = direct.render_as_string(hide_password=False)
        return cls(
            name=app.username,
            password=None if app.password is None else str(app.password),
            login_url=login_url,
            iam=settings.db_iam_auth and settings.db_pooler == "none",
        )


@dataclass(frozen=True)
class RowRoleReport:
    """What ``grant_row_role`` did, and what it found that lets the role do more than rows (``warnings``)."""

    name: str
    created: bool
    password_set: bool
    #: The tables and views granted ``ROW_PRIVILEGES`` (schema-qualified), the version table excluded.
    tables: tuple[str, ...]
    warnings: tuple[str, ...] = ()


async def advisory_lock(conn: AsyncConnection, key: int, *, what: str, wait: float = 900.0) -> None:
    """Take the transaction-scoped advisory lock ``key`` on ``conn`` (PostgreSQL), waiting up to ``wait`` seconds.

    It polls ``pg_try_advisory_xact_lock`` rather than blocking in ``pg_advisory_xact_lock``: a blocked statement
    would meet the session's ``lock_timeout`` and ``statement_timeout`` (``DB_LOCK_TIMEOUT``,
    ``DB_STATEMENT_TIMEOUT``: a second or a few), where another process's migration may hold the lock longer.

    Raises:
        ConcurrentUpdateError: the lock was still held by another session after ``wait`` seconds.
    """
    deadline = time.monotonic() + wait
    statement = text("SELECT pg_try_advisory_xact_lock(:key)")
    delay = 0.05
    waited = False
    while not (await conn.execute(statement, {"key": key})).scalar_one():
        if time.monotonic() >= deadline:
            raise ConcurrentUpdateError(f"{what}: another session held its lock for {wait:.0f} s")
        if not waited:
            logger.info("waiting for another session's %s", what)
            waited = True
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def login_refused(login_url: str, *, timeout: float = 10.0) -> bool:
    """Whether the server refuses the password of ``login_url`` (or knows no such role).

    A login the server accepts, even one then refused the database (``CONNECT`` revoked: SQLSTATE 42501), is
    not refused: its password works.

    Raises:
        Exception: the server could not be reached, or failed otherwise (the driver's error, through SQLAlchemy).
    """
    target = parse_database_url(login_url)
    engine = create_async_engine(
        target.url, poolclass=NullPool, connect_args={**target.connect_args, "timeout": timeout}
    )
    try:
        async with engine.connect():
            return False
    except DBAPIError as exc:
        states = set(_sqlstates(exc))
        if states & {"28P01", "28000"}:
            return True
        if "08P01" in states and "authentication failed" in str(exc.orig):  # a pooler's refusal, as engine.py
            return True
        if "42501" in states:
            return False
        raise
    finally:
        await engine.dispose()


async def grant_row_role(
    conn: AsyncConnection,
    role: RowRole,
    *,
    version_table: str = "alembic_version",
) -> RowRoleReport:
    """Create ``role`` if it does not exist, and grant it row access to what the migrating login owns.

    Runs in ``conn``'s transaction, as the schema owner, after the migrations; idempotent. Grants cover the
    current schema's tables, views and sequences whose owner the migrating login is (or inherits), so that
    services sharing a database with other owners see only their own.

    Args:
        conn: the migration's connection, in its transaction.
        role: the role to make and grant.
        version_table: the service's Alembic version table: ``SELECT`` only.

    Raises:
        ConfigurationError: the migrating login may not create the role or set its password (``CREATEROLE``).
    """
    await advisory_lock(conn, _GRANTS_LOCK, what="grants to the service's role")
    quote = conn.dialect.identifier_preparer.quote_identifier
    who = quote(role.name)
    verifier = None if role.password is None else scram_sha_256_verifier(role.password)
    password_clause = "" if verifier is None else f" PASSWORD {_literal(verifier)}"

    created = False
    password_set = False
    if not await _role_exists(conn, role.name):
        try:
            async with conn.begin_nested():
                # NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS are PostgreSQL's defaults.
                await _ddl(conn, f"CREATE ROLE {who} LOGIN{password_clause}")
            created, password_set = True, verifier is not None
        except Exception as exc:
            states = set(_sqlstates(exc))
            if states & {"42710", "23505"}:  # another database's migration created it meanwhile
                pass
            elif "42501" in states:
                raise ConfigurationError(
                    f"the migration's login may not create the role {role.name!r} (DATABASE_URL's user): give it "
                    "CREATEROLE, or create the role yourself, or set DB_APP_ROLE=none and grant it yourself"
                ) from None
            else:
                raise
    # An existing role keeps its password unless the server refuses it: checked by logging in as the role, on a
    # connection of its own (the role is committed; this transaction has not changed it).
    if not created and verifier is not None and role.login_url is not None and await login_refused(role.login_url):
        try:
            async with conn.begin_nested():
                await _ddl(conn, f"ALTER ROLE {who}{password_clause}")
            password_set = True
        except Exception as exc:
            if "42501" not in set(_sqlstates(exc)):
                raise
            raise ConfigurationError(
                f"the database refuses the password of {role.name!r} (DATABASE_URL's), and the migration's login "
                "may not change it: give that login CREATEROLE (and, from PostgreSQL 16, ADMIN on the role), or set "
                "the role's password to the secret's yourself"
            ) from None
    if created or password_set:
        logger.info(
            "the service's database role is ready",
            extra={"role": role.name, "created": created, "password_set": password_set},
        )

    if role.iam and await _scalar(conn, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam')"):
        await _ddl(conn, f"GRANT rds_iam TO {who}")
    database = str(await _scalar(conn, "SELECT current_database()"))
    current_schema = await _scalar(conn, "SELECT current_schema()")
    if current_schema is None:
        raise ConfigurationError("the migration's login has no current schema (search_path): set one")
    schema = str(current_schema)
    if not await _scalar(conn, "SELECT has_database_privilege(:name, current_database(), 'CONNECT')", role.name):
        await _ddl(conn, f"GRANT CONNECT ON DATABASE {quote(database)} TO {who}")
    await _ddl(conn, f"GRANT USAGE ON SCHEMA {quote(schema)} TO {who}")

    relations = await conn.execute(
        text(
            "SELECT c.relname, CAST(c.relkind AS text) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') "
            "AND pg_has_role(c.relowner, 'USAGE') ORDER BY c.relname"
        ),
        {"schema": schema},
    )
    names: list[str] = []
    tables: list[str] = []
    sequences: list[str] = []
    versions: list[str] = []
    for name, kind in relations:
        qualified = f"{quote(schema)}.{quote(name)}"
        if kind == "S":
            sequences.append(qualified)
        elif name == version_table:
            versions.append(qualified)
        elif kind in _TABLE_KINDS:
            tables.append(qualified)
            names.append(f"{schema}.{name}")
    if tables:
        listed = ", ".join(tables)
        await _ddl(conn, f"GRANT {ROW_PRIVILEGES} ON TABLE {listed} TO {who}")
        await _ddl(conn, f"REVOKE {_NOT_ROW_PRIVILEGES} ON TABLE {listed} FROM {who}")
    if versions:
        # The service reads its schema's revision (`productos check`); only migrations write it.
        listed = ", ".join(versions)
        await _ddl(conn, f"GRANT SELECT ON TABLE {listed} TO {who}")
        await _ddl(conn, f"REVOKE INSERT, UPDATE, DELETE, {_NOT_ROW_PRIVILEGES} ON TABLE {listed} FROM {who}")
    if sequences:
        await _ddl(conn, f"GRANT USAGE, SELECT ON SEQUENCE {', '.join(sequences)} TO {who}")
    # What the owner creates later, outside a migration run by productos, too.
    await _ddl(conn, f"ALTER DEFAULT PRIVILEGES IN SCHEMA {quote(schema)} GRANT {ROW_PRIVILEGES} ON TABLES TO {who}")
    await _ddl(conn, f"ALTER DEFAULT PRIVILEGES IN SCHEMA {quote(schema)} GRANT USAGE, SELECT ON SEQUENCES TO {who}")

    report = RowRoleReport(
        name=role.name,
        created=created,
        password_set=password_set,
        tables=tuple(names),
        warnings=tuple(await _more_than_rows(conn, role.name, schema)),
    )
    for warning in report.warnings:
        logger.warning(warning)
    return report


async def _more_than_rows(conn: AsyncConnection, name: str, schema: str) -> list[str]:
    """What lets ``name`` do more than read and write rows, each as a sentence that says how to remove it."""
    found: list[str] = []
    row = (
        await conn.execute(
            text(
                "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolcanlogin, "
                "pg_has_role(:name, current_user, 'MEMBER') AS owner_member, "
                "has_schema_privilege(:name, :schema, 'CREATE') AS schema_create "
                "FROM pg_roles WHERE rolname = :name"
            ),
            {"name": name, "schema": schema},
        )
    ).one()
    attributes = [
        word
        for word, held in (
            ("SUPERUSER", row.rolsuper),
            ("CREATEROLE", row.rolcreaterole),
            ("CREATEDB", row.rolcreatedb),
            ("BYPASSRLS", row.rolbypassrls),
        )
        if held
    ]
    if attributes:
        found.append(
            f"the service's login {name!r} has {', '.join(attributes)}: it can do more than read and write rows "
            f"(ALTER ROLE {name} NO{' NO'.join(attributes)})"
        )
    if row.owner_member and not row.rolsuper:
        found.append(
            f"the service's login {name!r} is a member of the schema owner's role: it can change the schema "
            "(REVOKE the owner's role from it)"
        )
    if row.schema_create and not row.rolsuper and not row.owner_member:
        found.append(
            f"the service's login {name!r} may create objects in the schema {schema!r}, through a grant to it or to "
            f"PUBLIC (PostgreSQL 14 and older grant CREATE on public to PUBLIC): REVOKE CREATE ON SCHEMA {schema} "
            "FROM PUBLIC"
        )
    if not row.rolcanlogin:
        found.append(f"the role {name!r} cannot log in (NOLOGIN): ALTER ROLE {name} LOGIN")
    return found


async def _role_exists(conn: AsyncConnection, name: str) -> bool:
    return bool(await _scalar(conn, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = :name)", name))


async def _scalar(conn: AsyncConnection, statement: str, name: str | None = None) -> object:
    return (await conn.execute(text(statement), {} if name is None else {"name": name})).scalar()


async def _ddl(conn: AsyncConnection, statement: str) -> None:
    """Run ``statement`` as it is: asyncpg's simple protocol, so nothing in it is read as a bind parameter
    (a verifier holds ``:`` and ``$``), in the transaction of ``conn``."""
    raw = await conn.get_raw_connection()
    await raw.driver_connection.execute(statement)  # type: ignore[union-attr]


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sqlstates(exc: BaseException) -> Iterator[str]:
    seen: BaseException | None = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    while seen is not None:
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str):
            yield state
        seen = seen.__cause__


# --- SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677), as PostgreSQL stores them --------------------------------


def scram_sha_256_verifier(password: str, *, salt: bytes | None = None, iterations: int = _SCRAM_ITERATIONS) -> str:
    """The verifier PostgreSQL stores for ``password``: ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``.

    ``CREATE ROLE ... PASSWORD '<verifier>'`` stores it as it is, so the password itself never reaches the server
    (nor its logs). The password is normalised with SASLprep first, as PostgreSQL's own client and server do, and
    used as it is when SASLprep refuses it.
    """
    salt = secrets.token_bytes(_SCRAM_SALT_BYTES) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password).encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _saslprep(password: str) -> str:
    """RFC 4013's SASLprep, as PostgreSQL applies it (src/common/saslprep.c): ASCII as it is; otherwise mapped,
    NFKC-normalised and checked; a password SASLprep prohibits is used unchanged."""
    if password.isascii():
        return password
    mapped = "".join(
        " " if stringprep.in_table_c12(char) else char for char in password if not stringprep.in_table_b1(char)
    )
    normalized = unicodedata.normalize("NFKC", mapped)
    if not normalized:
        return password
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21,
        stringprep.in_table_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if any(check(char) for char in normalized for check in prohibited):
        return password
    if any(stringprep.in_table_d1(char) for char in normalized):
        # Bidirectional text: no left-to-right character, and right-to-left ones at both ends.
        if any(stringprep.in_table_d2(char) for char in normalized):
            return password
        if not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1])):
            return password
    return normalized
