"""Composition root: the one place that turns ``Settings`` into adapters.

The container opens in the FastAPI lifespan (in each worker, after gunicorn forks) and closes on shutdown;
nothing here runs at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from productos.domain.errors import ConfigurationError
from productos.domain.ports import HealthProbe
from productos.domain.settings_ports import DatabaseCredentialsProvider, SettingsSource
from productos.infra.aws.clients import AwsClients
from productos.infra.db.engine import create_engine
from productos.infra.db.replica import ReadReplica
from productos.infra.db.replica_lag import watch_replica
from productos.infra.db.uow import SqlAlchemyHealthProbe
from productos.infra.db.url import parse_database_url
from productos.runtime.settings_loader import ResolvedSettings, open_settings
from productos.settings import Settings

# What only some settings use (a secret's or IAM's login, migrations at start, CloudWatch publishing) is imported
# where those settings are read, so that a worker keeps in memory only the code its settings need.
if TYPE_CHECKING:
    from productos.infra.aws.secretsmanager import SecretDatabaseCredentials, SecretsManagerSource
    from productos.infra.db.migrate import Migrations

__all__ = ["Runtime", "open_engine", "open_migration_engine", "open_replica", "open_runtime"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """What every productos service shares, built once per process: settings, engine, health, AWS clients."""

    settings: Settings
    engine: AsyncEngine
    health: HealthProbe
    #: One aioboto3 session and one client per service, shared by every AWS adapter of the process.
    aws: AwsClients | None = None
    #: Where each setting came from (``env``, ``ssm:/...``), when the runtime resolved them.
    sources: Mapping[str, str] = field(default_factory=dict)
    #: ``DATABASE_READ_URL``'s engine and state, sampled in the background; ``None`` when it is not set. Give it
    #: to a unit-of-work factory (``factory(engine, replica=runtime.replica)``) for its read-only units.
    replica: ReadReplica | None = None


@asynccontextmanager
async def open_runtime(
    settings: Settings | ResolvedSettings | None = None,
    *,
    sources: Sequence[SettingsSource] = (),
    env_file: str | Path | None = ".env",
    migrations: Sequence[Migrations] = (),
) -> AsyncIterator[Runtime]:
    """Create the AWS clients, the engine, the read replica's (``DATABASE_READ_URL``) and the metrics publisher;
    close them all on exit.

    Args:
        settings: the service's settings, or settings already resolved by ``open_settings`` (whose AWS clients
            and cached secret are then reused). When omitted they are resolved here, and the AWS clients that
            read them stay open for the runtime's life: one session, one client per service, for loading,
            secret rotation and every other AWS adapter.
        sources: your own settings sources (when ``settings`` is omitted).
        env_file: the ``.env`` file (when ``settings`` is omitted).
        migrations: applied at start when the settings say so (the embedded SQLite database, by default).

    Raises:
        ConfigurationError: the settings or a source are invalid.
    """
    async with AsyncExitStack() as stack:
        if settings is None:
            settings = await stack.enter_async_context(open_settings(env_file=env_file, sources=sources))
        resolved = settings if isinstance(settings, ResolvedSettings) else ResolvedSettings(settings, {})
        aws = resolved.aws
        if aws is None:
            aws = await stack.enter_async_context(AwsClients.from_settings(resolved.settings))
        engine = await stack.enter_async_context(open_engine(resolved.settings, aws=aws, secret=resolved.secret))
        if resolved.settings.should_migrate_on_start and migrations:
            from productos.infra.db.migrate import upgrade_to_head
            from productos.infra.db.roles import RowRole

            owner_engine = open_migration_engine(
                resolved.settings,
                aws=aws,
                secret=resolved.secret,
                migrate_secret=resolved.migrate_secret,
                engine=engine,
            )
            # DATABASE_MIGRATE_URL's owner makes DATABASE_URL's user a row-only role (DB_APP_ROLE).
            row_role = RowRole.from_settings(resolved.settings)
            async with owner_engine as owner:
                for migration in migrations:
                    await upgrade_to_head(
                        owner,
                        script_location=migration.script_location,
                        version_table=migration.version_table,
                        row_role=row_role,
                    )
        replica = None
        if resolved.settings.database_read_url is not None:
            replica = await stack.enter_async_context(open_replica(resolved.settings, aws=aws, secret=resolved.secret))
        if resolved.settings.metrics_publisher != "none":
            from productos.observability.publishing import open_metrics_publishing

            # PRODUCTOS_METRICS_PUBLISHER: one worker per instance publishes; its final flush precedes disposal.
            await stack.enter_async_context(open_metrics_publishing(resolved.settings, aws=aws))
        yield Runtime(
            settings=resolved.settings,
            engine=engine,
            health=SqlAlchemyHealthProbe(engine),
            aws=aws,
            sources=resolved.sources,
            replica=replica,
        )


@asynccontextmanager
async def open_engine(
    settings: Settings,
    *,
    aws: AwsClients | None = None,
    secret: SecretsManagerSource | None = None,
    url: SecretStr | None = None,
) -> AsyncIterator[AsyncEngine]:
    """The engine, logging new connections in as the settings say; disposed on exit.

    ``DB_IAM_AUTH=true``: a fresh RDS IAM token per new connection. ``PRODUCTOS_SECRET_ID`` whose secret
    holds the URL's login: the secret's current credentials, refreshed every ``PRODUCTOS_SECRET_TTL`` in the
    background and re-read when the database refuses a login. Otherwise the URL as it is.

    Args:
        settings: the service's settings.
        aws: shared AWS clients; opened here (and closed on exit) when needed and not given.
        secret: the secret already read while loading the settings, so start-up reads it once.
        url: another database URL than ``DATABASE_URL`` (``DATABASE_MIGRATE_URL``), with the same settings.
    """
    raw = (settings.database_url if url is None else url).get_secret_value()
    async with AsyncExitStack() as stack:
        is_sqlite = raw.startswith("sqlite")
        if aws is None and (settings.db_iam_auth or settings.secret_id) and not is_sqlite:
            aws = await stack.enter_async_context(AwsClients.from_settings(settings))
        credentials = None if is_sqlite else await _credentials(settings, raw, aws, secret)
        if credentials is not None and _follows_secret(credentials):
            refresher = asyncio.create_task(credentials.source.keep_fresh(), name="productos-secret-refresh")
            stack.push_async_callback(_cancel, refresher)
        engine = create_engine(settings, credentials=credentials, url=url)
        stack.push_async_callback(engine.dispose)
        yield engine


@asynccontextmanager
async def open_replica(
    settings: Settings,
    *,
    aws: AwsClients | None = None,
    secret: SecretsManagerSource | None = None,
) -> AsyncIterator[ReadReplica]:
    """``DATABASE_READ_URL``'s engine, with its state sampled now and then every second in the background (see
    ``productos.infra.db.replica``); both stop on exit. It logs in as ``open_engine`` does (an IAM token for its
    host, the secret's login when the URL has it), with its own pool and the same pool settings, limits and
    ``DB_POOLER``.

    Raises:
        ConfigurationError: ``DATABASE_READ_URL`` is unset or not PostgreSQL, or ``DATABASE_URL`` is not.
    """
    if settings.database_read_url is None:
        raise ConfigurationError("DATABASE_READ_URL is not set")
    target = parse_database_url(settings.database_read_url.get_secret_value(), setting="DATABASE_READ_URL")
    if target.dialect != "postgresql" or settings.is_sqlite:
        raise ConfigurationError(
            "DATABASE_READ_URL is a PostgreSQL read replica of a PostgreSQL DATABASE_URL: unset it, or set both"
        )
    async with open_engine(settings, aws=aws, secret=secret, url=settings.database_read_url) as engine:
        replica = ReadReplica(engine, max_lag=settings.db_read_max_lag)
        async with watch_replica(replica):
            yield replica


@asynccontextmanager
async def open_migration_engine(
    settings: Settings,
    *,
    aws: AwsClients | None = None,
    secret: SecretsManagerSource | None = None,
    migrate_secret: SecretsManagerSource | None = None,
    engine: AsyncEngine | None = None,
) -> AsyncIterator[AsyncEngine]:
    """The engine migrations run on: ``DATABASE_MIGRATE_URL``'s (the schema owner, straight to PostgreSQL)
    when it is set, disposed on exit; else ``engine``, the service's own, when given; else ``DATABASE_URL``'s.

    With ``PRODUCTOS_MIGRATE_SECRET_ID``, ``DATABASE_MIGRATE_URL`` logs in with that secret's login and follows its
    rotation (``migrate_secret``: the one read while loading the settings), and ``DB_IAM_AUTH``, which describes
    the service's login, does not apply to it; otherwise it logs in as ``open_engine`` says (``secret``:
    ``PRODUCTOS_SECRET_ID``'s).
    """
    if settings.database_migrate_url is None and engine is not None:
        yield engine
        return
    # The schema owner's login goes straight to PostgreSQL: DB_POOLER describes the service's URLs, not this one.
    direct = settings.model_copy(update={"db_pooler": "none"})
    async with AsyncExitStack() as stack:
        if settings.migrate_secret_id and settings.database_migrate_url is not None:
            if aws is None:
                aws = await stack.enter_async_context(AwsClients.from_settings(settings))
            if migrate_secret is None:
                from productos.infra.aws.secretsmanager import SecretsManagerSource

                migrate_secret = SecretsManagerSource(
                    await aws.client("secretsmanager"),
                    settings.migrate_secret_id,
                    ttl=settings.secret_ttl,
                    url_setting="DATABASE_MIGRATE_URL",
                )
            direct = direct.model_copy(update={"secret_id": settings.migrate_secret_id, "db_iam_auth": False})
            secret = migrate_secret
        owner = await stack.enter_async_context(
            open_engine(direct, aws=aws, secret=secret, url=settings.database_migrate_url)
        )
        yield owner


async def _credentials(
    settings: Settings, raw_url: str, aws: AwsClients | None, secret: SecretsManagerSource | None
) -> DatabaseCredentialsProvider | None:
    if aws is None:
        return None
    target = parse_database_url(raw_url)
    url = target.url
    if settings.db_iam_auth:
        from productos.infra.aws.rds_iam import RdsIamTokenProvider

        if "ssl" not in target.connect_args:
            logger.warning("DB_IAM_AUTH=true without sslmode in DATABASE_URL: RDS accepts IAM logins over TLS only")
        return RdsIamTokenProvider(
            await aws.client("rds"),
            host=url.host or "",
            port=url.port or 5432,
            user=url.username or "",
            region=aws.region,
        )
    if not settings.secret_id:
        return None
    from productos.infra.aws.secretsmanager import SecretDatabaseCredentials, SecretsManagerSource, supplies_login

    if secret is None:
        secret = SecretsManagerSource(await aws.client("secretsmanager"), settings.secret_id, ttl=settings.secret_ttl)
    if not supplies_login(await secret.current(), user=url.username, password=url.password, url_key=secret.url_setting):
        logger.info(
            "the database URL's login is not the secret's: new connections use the URL as it is",
            extra={"secret_id": settings.secret_id},
        )
        return None
    return SecretDatabaseCredentials(secret)


def _follows_secret(credentials: DatabaseCredentialsProvider) -> TypeGuard[SecretDatabaseCredentials]:
    from productos.infra.aws.secretsmanager import SecretDatabaseCredentials

    return isinstance(credentials, SecretDatabaseCredentials)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
