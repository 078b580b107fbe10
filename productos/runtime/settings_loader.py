"""Loading settings: the environment, ``.env``, SSM Parameter Store, Secrets Manager and your own sources,
composed in their order of precedence (explicit arguments > environment > your sources > Secrets Manager >
SSM > ``.env`` > defaults), each value labelled with where it came from.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dotenv import dotenv_values
from pydantic import SecretStr, ValidationError

from productos.domain.errors import ConfigurationError
from productos.domain.settings_ports import DatabaseCredentials, SettingsSource, SettingValue
from productos.infra.aws.clients import AwsClients
from productos.infra.db.url import parse_database_url
from productos.settings import AWS_BOOTSTRAP_FIELDS, Settings, env_names, fallback_env_names, settings_from_values

if TYPE_CHECKING:
    from productos.infra.aws.secretsmanager import SecretsManagerSource

__all__ = [
    "Layer",
    "ResolvedSettings",
    "build_settings",
    "layer_from_mapping",
    "load_settings",
    "open_settings",
    "resolve_settings",
]

logger = logging.getLogger(__name__)


#: One layer of configuration: field name -> (raw value, where it came from).
Layer = dict[str, tuple[Any, str]]


def layer_from_mapping(values: Mapping[str, Any], label: str | Callable[[str], str]) -> Layer:
    """Keep the entries of ``values`` that name a setting (by environment name, any case)."""
    names = env_names()
    fallbacks = fallback_env_names()
    layer: Layer = {}
    for key, value in values.items():
        field_name = names.get(key.upper())
        if field_name is not None and value is not None:
            layer[field_name] = (value, label(key) if callable(label) else label)
    for key, value in values.items():
        field_name = fallbacks.get(key.upper())
        if field_name is not None and value is not None and field_name not in layer:
            layer[field_name] = (value, label(key) if callable(label) else label)
    return layer


@dataclass(frozen=True)
class ResolvedSettings:
    """The settings and, for every field, the source its value came from (for ``productos check``).

    Sources: ``explicit``, ``env``, ``.env``, ``default``, ``ssm:<parameter name>``, ``secretsmanager:<id>``
    (``secretsmanager:<id>+ssm:<name>`` when a secret's credentials complete a ``DATABASE_URL`` from SSM), or
    the labels of your own sources. From ``open_settings``, ``aws`` and ``secret`` are the live clients and
    the cached secret, open until the context exits; from ``resolve_settings`` they are ``None``.
    ``migrate_secret`` is the schema owner's secret (``PRODUCTOS_MIGRATE_SECRET_ID``), likewise.
    """

    settings: Settings
    sources: Mapping[str, str]
    aws: AwsClients | None = None
    secret: SecretsManagerSource | None = None
    migrate_secret: SecretsManagerSource | None = None


def _problems(exc: ValidationError, sources: Mapping[str, str]) -> str:
    names = {v: k for k, v in env_names().items()}
    problems = []
    for error in exc.errors():
        field_name = str(error["loc"][0]) if error["loc"] else "?"
        where = sources.get(field_name, "default")
        problems.append(f"{names.get(field_name, field_name)} (from {where}): {error['msg']}")
    return "; ".join(problems)


def _complete_database_url(
    lower: tuple[Any, str] | None, credentials: DatabaseCredentials, label: str, field_name: str = "database_url"
) -> tuple[str, str]:
    """Put a secret's user and password into the ``DATABASE_URL`` (or ``DATABASE_MIGRATE_URL``: ``field_name``)
    of a lower source."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    name = field_name.upper()
    setting = "PRODUCTOS_MIGRATE_SECRET_ID" if field_name == "database_migrate_url" else "PRODUCTOS_SECRET_ID"
    holder = f"the secret {label.split(':', 1)[1]} ({setting})" if label.startswith("secretsmanager:") else label
    missing = ConfigurationError(
        f"{holder} holds a username and password but no host, and no source below it sets a "
        f"PostgreSQL {name} to complete: add host, port and dbname to the secret, or set {name} "
        f"(without its password) in SSM (<path>/{field_name.replace('_', '-')}), .env or the environment"
    )
    if lower is None:
        raise missing
    raw, lower_label = lower
    raw = raw.get_secret_value() if isinstance(raw, SecretStr) else str(raw)
    try:
        url = make_url(raw.strip())
    except ArgumentError:
        raise ConfigurationError(
            f"{name} (from {lower_label}) is not a valid URL; expected postgresql://user@host:5432/dbname"
        ) from None
    if url.get_backend_name() != "postgresql":
        raise missing
    url = url.set(password=credentials.password)
    if credentials.user:
        url = url.set(username=credentials.user)
    return url.render_as_string(hide_password=False), f"{label}+{lower_label}"


def build_settings(layers: Sequence[Layer]) -> ResolvedSettings:
    """Merge ``layers`` (lowest precedence first) over the defaults and validate once.

    A ``DatabaseCredentials`` value for ``database_url`` (a secret with only a username and password)
    completes the ``DATABASE_URL`` of the layers below it.

    Raises:
        ConfigurationError: a value is invalid; the message names the setting and its source, never the value.
    """
    merged: dict[str, Any] = {}
    sources: dict[str, str] = dict.fromkeys(Settings.model_fields, "default")
    for layer in layers:
        for field_name, (value, label) in layer.items():
            if isinstance(value, DatabaseCredentials):
                lower = (merged[field_name], sources[field_name]) if field_name in merged else None
                value, label = _complete_database_url(lower, value, label, field_name)
            merged[field_name] = value
            sources[field_name] = label
    try:
        settings = settings_from_values(merged)
    except ValidationError as exc:
        raise ConfigurationError("invalid settings: " + _problems(exc, sources)) from None
    _check_database(settings, sources)
    return ResolvedSettings(settings, sources)


def _check_database(settings: Settings, sources: Mapping[str, str]) -> None:

    where = sources.get("database_url", "default")
    try:
        target = parse_database_url(settings.database_url.get_secret_value())
    except ConfigurationError as exc:
        raise ConfigurationError(f"{exc} (DATABASE_URL from {where})") from None
    if settings.db_iam_auth and (target.dialect != "postgresql" or not target.url.username or not target.url.host):
        raise ConfigurationError(
            f"DB_IAM_AUTH=true (from {sources.get('db_iam_auth')}) needs a PostgreSQL DATABASE_URL with a "
            "user and "
            f"host (DATABASE_URL from {where}), for example "
            "postgresql://app_user@mydb.abc123.us-east-1.rds.amazonaws.com:5432/productos?sslmode=require"
        )
    if settings.database_read_url is not None:
        read_where = sources.get("database_read_url", "default")
        try:
            read = parse_database_url(settings.database_read_url.get_secret_value(), setting="DATABASE_READ_URL")
        except ConfigurationError as exc:
            raise ConfigurationError(f"{exc} (DATABASE_READ_URL from {read_where})") from None
        if read.dialect != "postgresql" or target.dialect != "postgresql":
            raise ConfigurationError(
                f"DATABASE_READ_URL (from {read_where}) is a PostgreSQL read replica of a PostgreSQL DATABASE_URL "
                f"(from {where}): unset it, or set both to postgresql:// URLs"
            )


def _local_layers(env_file: str | Path | None, overrides: Mapping[str, Any]) -> tuple[Layer, Layer, Layer]:
    dotenv: Layer = {}
    if env_file is not None and Path(env_file).is_file():
        dotenv = layer_from_mapping(dotenv_values(env_file), ".env")
    explicit: Layer = {name: (value, "explicit") for name, value in overrides.items()}
    return dotenv, layer_from_mapping(os.environ, "env"), explicit


def _bootstrap(layers: Sequence[Layer]) -> Settings:
    """The settings that say how to reach the remote sources, validated alone."""
    only = [{k: v for k, v in layer.items() if k in AWS_BOOTSTRAP_FIELDS} for layer in layers]
    return build_settings(only).settings


def _layer_from_source(values: Mapping[str, Any], default_label: str, *, warn_unknown: bool) -> Layer:
    names = env_names()
    fallbacks = fallback_env_names()
    layer: Layer = {}
    unknown: list[str] = []
    for key, item in values.items():
        value, label = (item.value, item.source) if isinstance(item, SettingValue) else (item, default_label)
        field_name = names.get(key.upper()) or fallbacks.get(key.upper())
        if field_name is None:
            unknown.append(label if label.startswith("ssm:") else key)
        elif field_name in AWS_BOOTSTRAP_FIELDS:
            logger.warning(
                "ignored %s from %s: it says where settings come from, so set it in the environment or .env",
                key.upper(),
                label,
            )
        elif value is not None:
            layer[field_name] = (value, label)
    if unknown:
        logger.log(
            logging.WARNING if warn_unknown else logging.INFO,
            "ignored %d value(s) that name no setting: %s",
            len(unknown),
            ", ".join(sorted(unknown)),
        )
    return layer


async def _load(source: SettingsSource) -> Mapping[str, Any]:
    try:
        return await source.load()
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(
            f"the settings source {type(source).__name__} failed ({type(exc).__name__}); see its documentation"
        ) from exc


@asynccontextmanager
async def open_settings(
    *,
    env_file: str | Path | None = ".env",
    sources: Sequence[SettingsSource] = (),
    aws: AwsClients | None = None,
    **overrides: Any,
) -> AsyncIterator[ResolvedSettings]:
    """Resolve the settings and keep the AWS clients and the cached secret open until the context exits.

    The composition root uses this so that the clients that loaded the settings also serve the rest of the
    process (secret rotation, IAM tokens, CloudWatch): one session and one client per service. Arguments as in
    ``resolve_settings``; ``aws``, when given, is used and left open (the caller owns it).
    """
    started = time.perf_counter()
    dotenv, env, explicit = _local_layers(env_file, overrides)
    boot = _bootstrap([dotenv, env, explicit])
    async with AsyncExitStack() as stack:
        secret: SecretsManagerSource | None = None
        migrate_secret: SecretsManagerSource | None = None
        jobs: list[tuple[Awaitable[Mapping[str, Any]], str, bool]] = []
        if boot.ssm_path or boot.secret_id or boot.migrate_secret_id:
            # Imported only here: a worker whose settings name no AWS source keeps none of their code.
            from productos.infra.aws.secretsmanager import SecretsManagerSource
            from productos.infra.aws.ssm import SsmParameterSource

            if aws is None:
                aws = await stack.enter_async_context(AwsClients.from_settings(boot))
            # Clients first: a client that cannot be created must not leave a read half-started.
            ssm = SsmParameterSource(await aws.client("ssm"), boot.ssm_path) if boot.ssm_path else None
            if boot.secret_id:
                client = await aws.client("secretsmanager")
                secret = SecretsManagerSource(client, boot.secret_id, ttl=boot.secret_ttl)
            if boot.migrate_secret_id:
                client = await aws.client("secretsmanager")
                migrate_secret = SecretsManagerSource(
                    client, boot.migrate_secret_id, ttl=boot.secret_ttl, url_setting="DATABASE_MIGRATE_URL"
                )
            if ssm is not None:
                jobs.append((ssm.load(), "ssm", True))
            if secret is not None:
                jobs.append((secret.load(), secret.label, False))
            if migrate_secret is not None:
                jobs.append((migrate_secret.load(), migrate_secret.label, False))
        jobs.extend((_load(source), type(source).__name__, False) for source in sources)
        results = await asyncio.gather(*(job for job, _, _ in jobs), return_exceptions=True)
        _raise_failures(results)
        remote = [
            _layer_from_source(values, label, warn_unknown=warn)
            for (_, label, warn), values in zip(jobs, results, strict=True)
            if not isinstance(values, BaseException)
        ]
        resolved = build_settings([dotenv, *remote, env, explicit])
        if (boot.ssm_path or boot.secret_id) and resolved.sources["database_url"] == "default":
            raise ConfigurationError(_no_database_url(boot))
        logger.info(
            "settings loaded",
            extra={
                "sources": sorted({label.split(":", 1)[0] for label in resolved.sources.values()}),
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        yield ResolvedSettings(resolved.settings, resolved.sources, aws, secret, migrate_secret)


def _raise_failures(results: Sequence[object]) -> None:
    """Report every failed source at once; anything but a ``ConfigurationError`` propagates as it is."""
    failures = [result for result in results if isinstance(result, BaseException)]
    for failure in failures:
        if not isinstance(failure, ConfigurationError):
            raise failure
    if failures:
        raise ConfigurationError("; ".join(str(failure) for failure in failures)) from failures[0]


def _no_database_url(boot: Settings) -> str:
    places = []
    if boot.ssm_path:
        places.append(f"the SSM parameter {boot.ssm_path.rstrip('/')}/database-url (SecureString)")
    if boot.secret_id:
        places.append(f"the secret {boot.secret_id} (a DATABASE_URL key, or RDS username/password/host/port/dbname)")
    return (
        "DATABASE_URL was found in no source: add it to "
        + " or ".join(places)
        + ", or set DATABASE_URL in the environment (DATABASE_URL=sqlite:///... to keep the embedded "
        "database)"
    )


async def resolve_settings(
    *,
    env_file: str | Path | None = ".env",
    sources: Sequence[SettingsSource] = (),
    **overrides: Any,
) -> ResolvedSettings:
    """Resolve every setting with its source; what ``productos check`` prints.

    Precedence, highest first: ``overrides`` (explicit arguments) > environment > ``sources`` (yours, the
    later winning) > Secrets Manager (``PRODUCTOS_SECRET_ID``) > SSM Parameter Store (``PRODUCTOS_SSM_PATH``)
    > ``env_file`` > defaults. AWS is read only when ``PRODUCTOS_SSM_PATH`` or ``PRODUCTOS_SECRET_ID`` is set:
    one paginated ``GetParametersByPath`` sequence and one ``GetSecretValue``, concurrently, through clients
    opened for the call and closed before it returns.

    Args:
        env_file: the ``.env`` file to read, or ``None`` for none.
        sources: your own ``SettingsSource`` objects.
        **overrides: explicit values by field name (``database_url=...``).

    Raises:
        ConfigurationError: a source failed or a value is invalid. The message names the parameter, secret
            or setting and says what to fix; it never contains a secret value.
    """
    async with open_settings(env_file=env_file, sources=sources, **overrides) as resolved:
        return ResolvedSettings(resolved.settings, resolved.sources)


async def load_settings(
    *, env_file: str | Path | None = ".env", sources: Sequence[SettingsSource] = (), **overrides: Any
) -> Settings:
    """Build the settings from every source, in precedence order (see ``resolve_settings``).

    Args:
        env_file: the ``.env`` file to read, or ``None`` for none.
        sources: your own ``SettingsSource`` objects.
        **overrides: explicit values by field name; they win over every source.

    Raises:
        ConfigurationError: a setting is invalid or a source failed; the message says which and what to fix.
    """
    return (await resolve_settings(env_file=env_file, sources=sources, **overrides)).settings
