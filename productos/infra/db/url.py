"""Turn ``DATABASE_URL`` as users write it into a SQLAlchemy async URL and driver arguments.

RDS users write ``postgresql://user:pass@host:5432/db?sslmode=require`` (or ``postgres://``). asyncpg does not
understand libpq's ``sslmode`` query parameter, so it becomes asyncpg's ``ssl`` connect argument.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from productos.domain.errors import ConfigurationError

_POSTGRES_SCHEMES = {
    "postgres",
    "postgresql",
    "postgresql+asyncpg",
    "postgresql+psycopg2",
    "postgresql+psycopg",
}
_SQLITE_SCHEMES = {"sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"}
_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
# libpq parameters that asyncpg would reject as unknown server settings; they are handled or not needed.
_LIBPQ_ONLY = {"sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "application_name"}


@dataclass(frozen=True)
class DatabaseTarget:
    url: URL
    connect_args: dict[str, Any] = field(default_factory=dict)

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @property
    def safe(self) -> str:
        """The URL without its password, for logs and diagnostics."""
        return self.url.render_as_string(hide_password=True)


def parse_database_url(raw: str, *, setting: str = "DATABASE_URL") -> DatabaseTarget:
    """Parse ``raw`` into a driver URL for asyncpg or aiosqlite.

    Args:
        raw: the URL as the user wrote it.
        setting: the setting it comes from, named in error messages (``DATABASE_READ_URL``...).

    Raises:
        ConfigurationError: the URL is malformed or names an unsupported database. The message never
            repeats the URL, which may hold a password.
    """
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError):
        # `from None`: the driver's message would repeat the URL, password included.
        raise ConfigurationError(
            f"{setting} is not a valid URL; expected postgresql://user:password@host:5432/dbname "
            "or sqlite:///path/to/file.db (URL-escape reserved characters such as @:/?#% in the password)"
        ) from None
    scheme = url.drivername
    if scheme in _SQLITE_SCHEMES:
        return DatabaseTarget(url.set(drivername="sqlite+aiosqlite"))
    if scheme not in _POSTGRES_SCHEMES:
        raise ConfigurationError(
            f"{setting} uses the unsupported scheme {scheme!r}; use postgresql:// (or postgres://) or sqlite://"
        )
    query = dict(url.query)
    connect_args: dict[str, Any] = {}
    sslmode = query.get("sslmode")
    if sslmode is not None:
        if isinstance(sslmode, tuple):
            sslmode = sslmode[-1]
        if sslmode not in _SSLMODES:
            raise ConfigurationError(f"{setting} has sslmode={sslmode!r}; use one of {sorted(_SSLMODES)}")
        connect_args["ssl"] = _ssl_argument(sslmode, query.get("sslrootcert"))
    if "application_name" in query:
        connect_args["server_settings"] = {"application_name": str(query["application_name"])}
    kept = {k: v for k, v in query.items() if k not in _LIBPQ_ONLY}
    return DatabaseTarget(url.set(drivername="postgresql+asyncpg", query=kept), connect_args)


def _ssl_argument(sslmode: str, rootcert: Any) -> ssl.SSLContext | str | bool:
    if sslmode in {"verify-ca", "verify-full"}:
        context = ssl.create_default_context(cafile=str(rootcert) if rootcert else None)
        context.check_hostname = sslmode == "verify-full"
        return context
    if sslmode == "disable":
        return False
    # allow / prefer / require: asyncpg implements these modes itself, as libpq does.
    return sslmode
