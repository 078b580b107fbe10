"""Typed, validated settings of a productos service.

Names are the environment variables of the architecture guide (``DATABASE_URL``, ``APP_HOST``...) plus
``DB_*`` pool settings and ``PRODUCTOS_*`` tuning. Precedence: explicit arguments > environment >
``.env`` > defaults (remote sources slot in between the environment and ``.env``: see
``load_settings``).
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./productos.db"

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


def _env(name: str) -> Any:
    """Field options for a setting read from exactly the environment variable ``name``."""
    return {"validation_alias": AliasChoices(name, name.lower())}


class Settings(BaseSettings):
    """Every setting of a productos service. Secrets are ``SecretStr`` and never printed."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
        frozen=True,
    )

    # Service
    service_name: str = Field("productos-api", **_env("PRODUCTOS_SERVICE_NAME"), min_length=1)
    database_url: SecretStr = Field(SecretStr(DEFAULT_DATABASE_URL), **_env("DATABASE_URL"))
    app_host: str = Field("0.0.0.0", **_env("APP_HOST"))  # noqa: S104 - behind the ALB's security group
    app_port: int = Field(8000, **_env("APP_PORT"), ge=1, le=65535)
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, **_env("WORKERS"), ge=1, le=256)
    log_level: LogLevel = Field("info", **_env("LOG_LEVEL"))

    # Database pool (the guide's values)
    db_pool_size: int = Field(10, **_env("DB_POOL_SIZE"), ge=1, le=1000)
    db_max_overflow: int = Field(20, **_env("DB_MAX_OVERFLOW"), ge=0, le=1000)
    db_pool_timeout: float = Field(3.0, **_env("DB_POOL_TIMEOUT"), gt=0, le=300)
    db_pool_recycle: int = Field(3600, **_env("DB_POOL_RECYCLE"), ge=-1)
    db_connect_timeout: float = Field(3.0, **_env("DB_CONNECT_TIMEOUT"), gt=0, le=300)
    db_statement_timeout: float = Field(5.0, **_env("DB_STATEMENT_TIMEOUT"), gt=0, le=3600)

    # HTTP serving
    health_timeout: float = Field(2.0, **_env("PRODUCTOS_HEALTH_TIMEOUT"), gt=0, le=4.5)
    max_body_size: int = Field(1024 * 1024, **_env("PRODUCTOS_MAX_BODY_SIZE"), ge=1)
    keepalive: int = Field(75, **_env("PRODUCTOS_KEEPALIVE"), ge=1)
    graceful_timeout: int = Field(30, **_env("PRODUCTOS_GRACEFUL_TIMEOUT"), ge=1)
    migrate_on_start: bool | None = Field(None, **_env("PRODUCTOS_MIGRATE_ON_START"))

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.get_secret_value().startswith("sqlite")

    @property
    def should_migrate_on_start(self) -> bool:
        """Migrate at start-up: on by default for the embedded SQLite database only."""
        return self.is_sqlite if self.migrate_on_start is None else self.migrate_on_start


async def load_settings(**overrides: Any) -> Settings:
    """Build the settings from every source, in precedence order.

    Args:
        **overrides: explicit values by field name; they win over every source.
    """
    return Settings(**overrides)
