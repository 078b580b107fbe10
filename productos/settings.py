"""Typed, validated settings of a productos service.

Names are the environment variables of the architecture guide (``DATABASE_URL``, ``APP_HOST``...) plus
``DB_*`` pool settings and ``PRODUCTOS_*`` tuning. Precedence: explicit arguments > environment >
``.env`` > defaults (remote sources slot in between the environment and ``.env``: see
``load_settings``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from productos.domain.errors import ConfigurationError

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


def env_names() -> dict[str, str]:
    """Map each setting's environment name (``DATABASE_URL``) to its field name (``database_url``)."""
    names: dict[str, str] = {}
    for field_name, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [field_name.upper()]
        names[str(choices[0]).upper()] = field_name
    return names


#: One layer of configuration: field name -> (raw value, where it came from).
Layer = dict[str, tuple[Any, str]]


def layer_from_mapping(values: Mapping[str, Any], label: str | Callable[[str], str]) -> Layer:
    """Keep the entries of ``values`` that name a setting (by environment name, any case)."""
    names = env_names()
    layer: Layer = {}
    for key, value in values.items():
        field_name = names.get(key.upper())
        if field_name is not None and value is not None:
            layer[field_name] = (value, label(key) if callable(label) else label)
    return layer


@dataclass(frozen=True)
class ResolvedSettings:
    """The settings and, for every field, the source its value came from (for ``productos check``)."""

    settings: Settings
    sources: Mapping[str, str]


def build_settings(layers: Sequence[Layer]) -> ResolvedSettings:
    """Merge ``layers`` (lowest precedence first) over the defaults and validate once.

    Raises:
        ConfigurationError: a value is invalid; the message names the setting and its source, never the value.
    """
    merged: dict[str, Any] = {}
    sources: dict[str, str] = dict.fromkeys(Settings.model_fields, "default")
    for layer in layers:
        for field_name, (value, label) in layer.items():
            merged[field_name] = value
            sources[field_name] = label
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        names = {v: k for k, v in env_names().items()}
        problems = []
        for error in exc.errors():
            field_name = str(error["loc"][0]) if error["loc"] else "?"
            where = sources.get(field_name, "default")
            problems.append(f"{names.get(field_name, field_name)} (from {where}): {error['msg']}")
        raise ConfigurationError("invalid settings: " + "; ".join(problems)) from None
    return ResolvedSettings(settings, sources)


async def resolve_settings(*, env_file: str | Path | None = ".env", **overrides: Any) -> ResolvedSettings:
    """Resolve every setting with its source.

    Precedence, highest first: ``overrides`` (explicit arguments) > environment > ``.env`` > defaults.
    """
    layers: list[Layer] = []
    if env_file is not None and Path(env_file).is_file():
        layers.append(layer_from_mapping(dotenv_values(env_file), ".env"))
    layers.append(layer_from_mapping(os.environ, "env"))
    layers.append({name: (value, "explicit") for name, value in overrides.items()})
    return build_settings(layers)


async def load_settings(**overrides: Any) -> Settings:
    """Build the settings from every source, in precedence order.

    Args:
        **overrides: explicit values by field name; they win over every source.

    Raises:
        ConfigurationError: a setting is invalid; the message says which and where it came from.
    """
    return (await resolve_settings(**overrides)).settings
