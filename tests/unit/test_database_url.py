"""``DATABASE_URL`` as users and RDS write it, turned into asyncpg/aiosqlite URLs and connect arguments."""

from __future__ import annotations

import ssl

import pytest

from productos.domain.errors import ConfigurationError
from productos.infra.db.url import parse_database_url

PASSWORD = "s3cr3t-Pa55"


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg2"])
def test_postgres_schemes_become_asyncpg(scheme: str) -> None:
    target = parse_database_url(f"{scheme}://app:{PASSWORD}@db.example.com:5433/productos")
    assert target.dialect == "postgresql"
    assert target.url.drivername == "postgresql+asyncpg"
    assert (
        target.url.username,
        target.url.password,
        target.url.host,
        target.url.port,
        target.url.database,
    ) == (
        "app",
        PASSWORD,
        "db.example.com",
        5433,
        "productos",
    )
    assert target.connect_args == {}


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_database_url("  postgres://u@h/db\n").url.drivername == "postgresql+asyncpg"


def test_percent_encoded_password_is_decoded() -> None:
    assert parse_database_url("postgresql://app:p%40ss%2Fw@h/db").url.password == "p@ss/w"


@pytest.mark.parametrize("mode", ["require", "prefer", "allow"])
def test_sslmode_becomes_asyncpg_ssl_argument(mode: str) -> None:
    target = parse_database_url(f"postgres://app:{PASSWORD}@h:5432/db?sslmode={mode}")
    assert target.connect_args == {"ssl": mode}
    assert "sslmode" not in target.url.query


def test_sslmode_disable_turns_ssl_off() -> None:
    target = parse_database_url("postgresql://u@h/db?sslmode=disable")
    assert target.connect_args["ssl"] is False


@pytest.mark.parametrize(("mode", "check_hostname"), [("verify-full", True), ("verify-ca", False)])
def test_sslmode_verify_builds_a_verifying_context(mode: str, check_hostname: bool) -> None:
    target = parse_database_url(f"postgresql://u@h/db?sslmode={mode}")
    context = target.connect_args["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is check_hostname


def test_libpq_only_parameters_are_not_passed_to_asyncpg() -> None:
    target = parse_database_url(
        "postgresql://u@h/db?sslmode=require&connect_timeout=5&application_name=svc&options=-c%20x%3D1"
    )
    assert set(target.url.query) == {"options"}
    assert target.connect_args["server_settings"] == {"application_name": "svc"}


def test_safe_form_hides_the_password() -> None:
    target = parse_database_url(f"postgresql://app:{PASSWORD}@h/db")
    assert PASSWORD not in target.safe
    assert "app:***@h" in target.safe


@pytest.mark.parametrize(
    ("raw", "database"),
    [
        ("sqlite:///./productos.db", "./productos.db"),
        ("sqlite:////var/lib/productos/p.db", "/var/lib/productos/p.db"),
        ("sqlite+aiosqlite:///x.db", "x.db"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite://", None),
    ],
)
def test_sqlite_becomes_aiosqlite(raw: str, database: str | None) -> None:
    target = parse_database_url(raw)
    assert target.url.drivername == "sqlite+aiosqlite"
    assert target.dialect == "sqlite"
    assert target.url.database == database
    assert target.connect_args == {}


@pytest.mark.parametrize(
    "raw",
    [
        f"mysql://app:{PASSWORD}@h/db",
        f"http://app:{PASSWORD}@h/db",
        f"oracle+cx_oracle://app:{PASSWORD}@h/db",
        f"app:{PASSWORD}@h/db",
        f"not a url {PASSWORD}",
        "",
        f"postgresql://app:{PASSWORD}@h/db?sslmode=bogus",
    ],
)
def test_bad_urls_raise_configuration_error_without_the_password(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="DATABASE_URL") as raised:
        parse_database_url(raw)
    assert PASSWORD not in str(raised.value)
    # Chained causes end up in logs and tracebacks too.
    cause = raised.value.__cause__
    assert cause is None or PASSWORD not in str(cause)


@pytest.mark.parametrize("raw", [f"postgresql://app:{PASSWORD}@h:notaport/db", f"postgresql://app:{PASSWORD}@h:-1x/db"])
def test_non_numeric_port_raises_configuration_error_without_the_password(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="DATABASE_URL") as raised:
        parse_database_url(raw)
    assert PASSWORD not in str(raised.value)
    assert raised.value.__cause__ is None
