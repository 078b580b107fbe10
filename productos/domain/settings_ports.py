"""Ports for configuration: sources of settings and providers of database credentials.

Adapters: ``productos.infra.aws`` (SSM Parameter Store, Secrets Manager, RDS IAM tokens). A service may plug
in its own source (Vault, a file, an HTTP endpoint): see ``examples/custom_settings_source.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class SettingValue:
    """One value a source holds, with where it came from (``ssm:/productos-api/database-url``).

    ``productos check`` shows ``source`` beside every setting, so it must never contain the value.
    """

    value: Any = field(repr=False)
    source: str


@runtime_checkable
class SettingsSource(Protocol):
    """A source of settings, read once when the service starts.

    Keys are the settings' environment names (``DATABASE_URL``, ``LOG_LEVEL``), in any case; values are
    strings as an environment variable would hold them. Sources rank between the environment and the remote
    AWS sources: see ``productos.settings.resolve_settings``.

    Raise ``ConfigurationError`` with a message that names what is missing and how to fix it, and never
    includes a secret value.
    """

    async def load(self) -> Mapping[str, SettingValue]: ...


@dataclass(frozen=True)
class DatabaseCredentials:
    """A database login. ``user=None`` keeps the user of ``DATABASE_URL``."""

    password: str = field(repr=False)
    user: str | None = None


class DatabaseCredentialsProvider(Protocol):
    """Supplies the credentials of every new database connection (rotated secrets, IAM tokens).

    Pooled connections stay logged in; only new connections ask.
    """

    async def get(self) -> DatabaseCredentials:
        """The credentials to log in with now (cached by the adapter as it sees fit)."""
        ...

    async def after_auth_failure(self, failed: DatabaseCredentials) -> Sequence[DatabaseCredentials]:
        """The server refused ``failed``: fetch again (once) and return other credentials to try, if any."""
        ...
