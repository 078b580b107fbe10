"""Typed, validated settings of a productos service: the schema, which depends on no adapter.

Names are the environment variables of the architecture guide (``DATABASE_URL``, ``APP_HOST``...) plus
``DB_*`` pool settings and ``PRODUCTOS_*`` tuning. Precedence, highest first: explicit arguments >
environment > your own sources > Secrets Manager (``PRODUCTOS_SECRET_ID``) > SSM Parameter Store
(``PRODUCTOS_SSM_PATH``) > ``.env`` > defaults. ``productos.runtime.load_settings`` composes those sources;
``Settings()`` alone reads the environment and ``.env`` only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from ipaddress import ip_network
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from productos.domain.settings_ports import (
    DatabaseCredentials,
    DatabaseCredentialsProvider,
    SettingsSource,
    SettingValue,
)

__all__ = [
    "AWS_BOOTSTRAP_FIELDS",
    "DEFAULT_DATABASE_URL",
    "DatabaseCredentials",
    "DatabaseCredentialsProvider",
    "LogLevel",
    "SettingValue",
    "Settings",
    "SettingsSource",
    "env_names",
    "parse_proxies",
    "settings_from_values",
]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./productos.db"

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


def _env(name: str, *fallbacks: str) -> Any:
    """Field options for a setting read from the environment variable ``name`` (else from ``fallbacks``)."""
    names = [name, *fallbacks]
    return {"validation_alias": AliasChoices(*names, *(n.lower() for n in names))}


#: While ``settings_from_values`` validates, ``Settings`` reads nothing itself (no environment, no ``.env``).
_LAYERS_ONLY: ContextVar[bool] = ContextVar("productos_settings_layers_only", default=False)


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
    #: The schema owner's login, straight to PostgreSQL (not through a pooler: ``DB_POOLER`` does not apply to
    #: it), for ``productos migrate`` and the migrations at start; unset: ``DATABASE_URL``'s.
    database_migrate_url: SecretStr | None = Field(None, **_env("DATABASE_MIGRATE_URL"))
    #: ``auto``: when ``DATABASE_MIGRATE_URL`` logs in as another user than ``DATABASE_URL``, the migrations (run
    #: as that owner) make ``DATABASE_URL``'s user a role that may only read and write rows
    #: (``productos.migrations.RowRole``). ``none``: they make no role and grant nothing (a DBA does).
    db_app_role: Literal["auto", "none"] = Field("auto", **_env("DB_APP_ROLE"))
    #: A read replica of ``DATABASE_URL`` (an RDS read replica, an Aurora reader endpoint), PostgreSQL, for the
    #: read-only units of work of the services that take it (``productos.infra.db.replica``); its own pool, with
    #: the same pool settings, limits and ``DB_POOLER``. Unset: every unit goes to ``DATABASE_URL``.
    database_read_url: SecretStr | None = Field(None, **_env("DATABASE_READ_URL"))
    #: Seconds of replication lag past which reads go to the primary, until the replica catches up.
    db_read_max_lag: float = Field(5.0, **_env("DB_READ_MAX_LAG"), gt=0, le=86_400)
    app_host: str = Field("0.0.0.0", **_env("APP_HOST"))  # noqa: S104 - behind the ALB's security group
    app_port: int = Field(8000, **_env("APP_PORT"), ge=1, le=65535)
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, **_env("WORKERS"), ge=1, le=256)
    log_level: LogLevel = Field("info", **_env("LOG_LEVEL"))
    #: ``auto``: aligned, coloured lines when stdout is a terminal, JSON lines otherwise (systemd, CloudWatch).
    log_format: Literal["auto", "json", "console"] = Field("auto", **_env("LOG_FORMAT"))

    # Database pool, per worker: 4 + 4, measured against the guide's 10 + 20 (bench/README.md, "Pool sizing"): the
    # same req/s at 8, 64 and 256 clients and a shorter tail, holding 16 connections per 2-worker instance, not 60.
    db_pool_size: int = Field(4, **_env("DB_POOL_SIZE"), ge=1, le=1000)
    db_max_overflow: int = Field(4, **_env("DB_MAX_OVERFLOW"), ge=0, le=1000)
    db_pool_timeout: float = Field(3.0, **_env("DB_POOL_TIMEOUT"), gt=0, le=300)
    db_pool_recycle: int = Field(3600, **_env("DB_POOL_RECYCLE"), ge=-1)
    #: Pre-ping a pooled connection when it has been idle this long (seconds); 0 pings on every checkout.
    db_pool_pre_ping_idle: float = Field(1.0, **_env("DB_POOL_PRE_PING_IDLE"), ge=0, le=3600)
    db_connect_timeout: float = Field(3.0, **_env("DB_CONNECT_TIMEOUT"), gt=0, le=300)
    db_statement_timeout: float = Field(5.0, **_env("DB_STATEMENT_TIMEOUT"), gt=0, le=3600)
    #: How long a statement waits for a lock (a row another transaction is changing) before it gives up with
    #: 409; never more than half of ``db_statement_timeout`` (see ``productos.infra.db.engine.SessionLimits``).
    db_lock_timeout: float = Field(1.0, **_env("DB_LOCK_TIMEOUT"), gt=0, le=3600)
    #: ``transaction``: every database URL leads to a transaction-mode pooler (PgBouncer's pool_mode=transaction,
    #: RDS Proxy), so every unit of work runs in BEGIN...COMMIT with the session limits set per transaction and no
    #: named prepared statements (``productos.infra.db.engine.SessionLimits``). ``none``: straight to PostgreSQL.
    db_pooler: Literal["none", "transaction"] = Field("none", **_env("DB_POOLER"))
    #: This service's share of the database server's connections: its ``max_connections`` less the reserved ones
    #: and what other clients hold. Unset: all of it (``productos check`` reads it from the server). The worst
    #: case, ASG maximum x ``WORKERS`` x (``DB_POOL_SIZE`` + ``DB_MAX_OVERFLOW``), must fit in it
    #: (``productos.domain.connection_budget``).
    db_connection_budget: int | None = Field(None, **_env("DB_CONNECTION_BUDGET"), ge=1, le=1_000_000)

    # HTTP serving
    health_timeout: float = Field(2.0, **_env("PRODUCTOS_HEALTH_TIMEOUT"), gt=0, le=4.5)
    max_body_size: int = Field(1024 * 1024, **_env("PRODUCTOS_MAX_BODY_SIZE"), ge=1)
    keepalive: int = Field(75, **_env("PRODUCTOS_KEEPALIVE"), ge=1)
    graceful_timeout: int = Field(30, **_env("PRODUCTOS_GRACEFUL_TIMEOUT"), ge=1)
    #: Under the tuned gunicorn configuration: move what each worker built while importing the app out of the
    #: garbage collector's reach (``gc.freeze``), so that full collections stop scanning it.
    gc_freeze: bool = Field(True, **_env("PRODUCTOS_GC_FREEZE"))
    migrate_on_start: bool | None = Field(None, **_env("PRODUCTOS_MIGRATE_ON_START"))
    #: ``/openapi.json``, ``/docs`` and ``/redoc``; off in production when the API's description is not public.
    docs_enabled: bool = Field(True, **_env("PRODUCTOS_DOCS_ENABLED"))

    # HTTP edge: leaving service and the limits of a front-line server (productos.entrypoints.worker and
    # .protocol; productos.http.limits). All but the concurrency bound are read by gunicorn's master: env/.env.
    #: Seconds a worker keeps serving after SIGTERM, readiness 503 and every response Connection: close, so the
    #: balancer's health checks see it go first; small by default, the deploy kit sets its own.
    drain_seconds: int = Field(5, **_env("PRODUCTOS_DRAIN_SECONDS"), ge=0, le=600)
    #: Bytes of a request head (request line and header fields); 64 KiB is what an ALB forwards at most.
    max_header_size: int = Field(64 * 1024, **_env("PRODUCTOS_MAX_HEADER_SIZE"), ge=1024, le=1024 * 1024)
    max_header_count: int = Field(100, **_env("PRODUCTOS_MAX_HEADER_COUNT"), ge=1, le=10_000)
    #: Seconds to receive a request head, from the connection's opening or a later request's first byte.
    header_timeout: float = Field(10.0, **_env("PRODUCTOS_HEADER_TIMEOUT"), gt=0, le=300)
    #: Requests one worker serves at once before it answers 503 with Retry-After; 0: no bound. A guard against
    #: floods, above ordinary overload (README: at 256 clients a bound of 100 cost 30-40 % of the 200s).
    max_concurrent_requests: int = Field(256, **_env("PRODUCTOS_MAX_CONCURRENT_REQUESTS"), ge=0, le=100_000)

    # Remote sources, read at start-up (these come from explicit arguments, the environment or .env only)
    ssm_path: str | None = Field(None, **_env("PRODUCTOS_SSM_PATH"))
    secret_id: str | None = Field(None, **_env("PRODUCTOS_SECRET_ID"))
    #: A second secret, the schema owner's login (an RDS-style secret, such as RDS's own master user secret): it
    #: yields ``DATABASE_MIGRATE_URL``, or completes one from a lower source, and nothing else.
    migrate_secret_id: str | None = Field(None, **_env("PRODUCTOS_MIGRATE_SECRET_ID"))
    secret_ttl: float = Field(300.0, **_env("PRODUCTOS_SECRET_TTL"), gt=0, le=86_400)
    db_iam_auth: bool = Field(False, **_env("DB_IAM_AUTH"))

    # AWS clients (endpoint: botocore's own AWS_ENDPOINT_URL; credentials: botocore's default chain)
    aws_region: str | None = Field(None, **_env("AWS_REGION", "AWS_DEFAULT_REGION"))
    aws_connect_timeout: float = Field(2.0, **_env("PRODUCTOS_AWS_CONNECT_TIMEOUT"), gt=0, le=60)
    aws_read_timeout: float = Field(5.0, **_env("PRODUCTOS_AWS_READ_TIMEOUT"), gt=0, le=300)
    aws_max_attempts: int = Field(3, **_env("PRODUCTOS_AWS_MAX_ATTEMPTS"), ge=1, le=10)

    # Observability (metrics, tracing, access log): see productos.observability
    metrics_enabled: bool = Field(True, **_env("PRODUCTOS_METRICS_ENABLED"))
    tracing_enabled: bool = Field(True, **_env("PRODUCTOS_TRACING_ENABLED"))
    #: One JSON line per request at info level; off when the ALB's access logs are enough (5-15 % of the CPU
    #: of a primary-key GET: bench/README.md).
    access_log: bool = Field(True, **_env("PRODUCTOS_ACCESS_LOG"))
    otel_exporter: Literal["auto", "otlp", "console", "none"] = Field("auto", **_env("PRODUCTOS_OTEL_EXPORTER"))
    otel_exporter_otlp_endpoint: str | None = Field(None, **_env("OTEL_EXPORTER_OTLP_ENDPOINT"))
    #: OpenTelemetry's per-signal exporters; when set, each wins over ``otel_exporter`` for its signal
    #: (``prometheus``: ``/metrics`` only, which is always served).
    otel_traces_exporter: Literal["otlp", "console", "none"] | None = Field(None, **_env("OTEL_TRACES_EXPORTER"))
    otel_metrics_exporter: Literal["otlp", "console", "prometheus", "none"] | None = Field(
        None, **_env("OTEL_METRICS_EXPORTER")
    )
    xray: bool = Field(False, **_env("PRODUCTOS_XRAY"))
    trusted_proxies: str = Field("", **_env("PRODUCTOS_TRUSTED_PROXIES"))

    # CloudWatch metrics publishing (one publisher per instance): see productos.observability.publishing
    metrics_publisher: Literal["none", "cloudwatch", "emf"] = Field("none", **_env("PRODUCTOS_METRICS_PUBLISHER"))
    cloudwatch_namespace: str = Field(
        "Productos", **_env("PRODUCTOS_CLOUDWATCH_NAMESPACE"), min_length=1, max_length=255
    )
    metrics_interval: int = Field(60, **_env("PRODUCTOS_METRICS_INTERVAL"), ge=1, le=60)
    asg_name: str | None = Field(None, **_env("PRODUCTOS_ASG_NAME"))
    #: The Auto Scaling group's maximum size, for the connection budget; unset: its ``MaxSize`` from the Auto
    #: Scaling API when ``PRODUCTOS_ASG_NAME`` names it.
    asg_max_size: int | None = Field(None, **_env("PRODUCTOS_ASG_MAX_SIZE"), ge=1, le=100_000)

    @field_validator("metrics_publisher", "db_pooler", "db_app_role", mode="before")
    @classmethod
    def _lower_publisher(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("otel_traces_exporter", "otel_metrics_exporter", mode="before")
    @classmethod
    def _otel_exporter_name(cls, value: Any) -> Any:
        # OpenTelemetry's enumerations are case-insensitive; an empty variable is an unset one.
        return (value.strip().lower() or None) if isinstance(value, str) else value

    @field_validator("database_migrate_url", "database_read_url", mode="before")
    @classmethod
    def _blank_url_is_unset(cls, value: Any) -> Any:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if isinstance(raw, str) and not raw.strip() else value

    @field_validator("asg_name", mode="before")
    @classmethod
    def _blank_asg_is_unset(cls, value: Any) -> Any:
        return (value.strip() or None) if isinstance(value, str) else value

    @field_validator("cloudwatch_namespace")
    @classmethod
    def _custom_namespace(cls, value: str) -> str:
        if value.startswith("AWS/"):
            raise ValueError("AWS/ namespaces are AWS's own: choose another, for example Productos")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        return ",".join(parse_proxies(value))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _LAYERS_ONLY.get():
            return (init_settings,)
        return (init_settings, env_settings, dotenv_settings, file_secret_settings)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator(
        "ssm_path",
        "secret_id",
        "migrate_secret_id",
        "aws_region",
        "db_connection_budget",
        "asg_max_size",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("ssm_path")
    @classmethod
    def _absolute_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must start with '/', for example /productos-api/")
        return value

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


def fallback_env_names() -> dict[str, str]:
    """Secondary environment names (``AWS_DEFAULT_REGION``), used when the primary one is absent."""
    primary = env_names()
    names: dict[str, str] = {}
    for field_name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            for choice in alias.choices:
                name = str(choice).upper()
                if name not in primary:
                    names.setdefault(name, field_name)
    return names


#: Settings that say how to reach the remote sources: they come from explicit arguments, env or .env only.
AWS_BOOTSTRAP_FIELDS = frozenset(
    {
        "ssm_path",
        "secret_id",
        "migrate_secret_id",
        "secret_ttl",
        "aws_region",
        "aws_connect_timeout",
        "aws_read_timeout",
        "aws_max_attempts",
    }
)


def settings_from_values(values: Mapping[str, Any]) -> Settings:
    """Validate ``values`` (field names) into ``Settings`` without reading the environment or ``.env``.

    Raises:
        pydantic.ValidationError: a value is invalid.
    """
    token = _LAYERS_ONLY.set(True)
    try:
        return Settings.model_validate(dict(values))
    finally:
        _LAYERS_ONLY.reset(token)


def parse_proxies(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Split ``"10.0.0.0/16, 127.0.0.1"`` into its entries, each checked (an address, a network, or ``*``)
    and networks normalised.

    Raises:
        ValueError: an entry is none of these (the message names it).
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    entries: list[str] = []
    for item in (item.strip() for item in items):
        if not item or item == "*":
            entries.extend([item] if item else [])
            continue
        try:
            network = ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address, a CIDR network or '*'") from None
        # 10.0.0.7/16 means 10.0.0.0/16 (gunicorn would refuse the former).
        entries.append(str(network) if "/" in item else item)
    return tuple(entries)


_MOVED = frozenset({"ResolvedSettings", "build_settings", "load_settings", "open_settings", "resolve_settings"})


def __getattr__(name: str) -> Any:
    # Loading composes the AWS adapters, which depend on this schema: it lives in productos.runtime now.
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(f"productos.settings.{name} moved to productos.runtime.{name}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module("productos.runtime.settings_loader"), name)
    raise AttributeError(f"module 'productos.settings' has no attribute {name!r}")
