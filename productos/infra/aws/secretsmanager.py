"""Settings and rotating database credentials from one Secrets Manager secret.

The secret's ``SecretString`` is a JSON object. Its keys that name settings (``DATABASE_URL``,
``LOG_LEVEL``...) are settings. An RDS secret (``username``, ``password``, ``host``, ``port``, ``dbname``,
``engine``) yields ``DATABASE_URL`` with user and password URL-escaped; one with only ``username`` and
``password`` (an RDS-managed master user secret) completes the ``DATABASE_URL`` of a lower source (SSM,
``.env``) with its credentials.

The secret is cached for ``ttl`` seconds and refreshed in the background (``keep_fresh``), so new database
connections pick up a rotated password without a restart; ``SecretDatabaseCredentials`` also re-reads it once
when the database refuses a login.

A second secret, the schema owner's (``PRODUCTOS_MIGRATE_SECRET_ID``, ``url_setting="DATABASE_MIGRATE_URL"``),
yields ``DATABASE_MIGRATE_URL`` the same way from its RDS-style login (or its own ``DATABASE_MIGRATE_URL`` key),
and nothing else: the service's settings come from ``PRODUCTOS_SECRET_ID``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from productos.domain.errors import ConfigurationError
from productos.domain.settings_ports import DatabaseCredentials, SettingValue
from productos.infra.aws.clients import describe_aws_failure

logger = logging.getLogger(__name__)

CURRENT = "AWSCURRENT"
PENDING = "AWSPENDING"
PREVIOUS = "AWSPREVIOUS"
_RDS_KEYS = frozenset(
    {
        "username",
        "password",
        "host",
        "port",
        "dbname",
        "engine",
        "dbInstanceIdentifier",
        "dbClusterIdentifier",
        "masterarn",
        "proxyname",
    }
)
_POSTGRES_ENGINES = frozenset({"postgres", "postgresql", "aurora-postgresql"})
#: The setting that names a secret, by the database URL its login yields.
_SETTING_OF = {"DATABASE_URL": "PRODUCTOS_SECRET_ID", "DATABASE_MIGRATE_URL": "PRODUCTOS_MIGRATE_SECRET_ID"}
#: After a failed background read, wait this long (at most) before trying AWS again; the cached value is kept.
_RETRY_AFTER_FAILURE = 30.0


class SecretsManagerSource:
    """One secret, read with ``GetSecretValue`` and cached for ``ttl`` seconds.

    Args:
        client: an aioboto3 ``secretsmanager`` client, opened once and shared.
        secret_id: the secret's name or ARN (``PRODUCTOS_SECRET_ID``).
        ttl: seconds a read stays fresh; new connections past it read again (``PRODUCTOS_SECRET_TTL``).
        url_setting: the database URL its login yields or completes: ``DATABASE_URL``, with every other key a
            setting; ``DATABASE_MIGRATE_URL`` (the owner's secret, ``PRODUCTOS_MIGRATE_SECRET_ID``), alone.
    """

    def __init__(
        self,
        client: Any,
        secret_id: str,
        *,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        url_setting: str = "DATABASE_URL",
    ) -> None:
        if url_setting not in _SETTING_OF:
            raise ValueError(f"url_setting must be one of {sorted(_SETTING_OF)}")
        self.url_setting = url_setting
        #: The setting that names this secret, for messages.
        self.setting = _SETTING_OF[url_setting]
        if not secret_id.strip():
            raise ConfigurationError(f"{self.setting} is empty: set it to the secret's name or ARN")
        if ttl <= 0:
            raise ConfigurationError("PRODUCTOS_SECRET_TTL must be positive (seconds)")
        self._client = client
        self.secret_id = secret_id.strip()
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[str, tuple[dict[str, Any], float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._retry_at = 0.0

    @property
    def label(self) -> str:
        return f"secretsmanager:{self.secret_id}"

    async def load(self) -> Mapping[str, SettingValue]:
        """Read the secret (one ``GetSecretValue``) and return its settings, labelled ``secretsmanager:<id>``.

        Raises:
            ConfigurationError: the secret is missing, refused, unreachable, not a JSON object, or an RDS
                secret of another engine. The message names the secret, never its value.
        """
        return self.settings_from(await self.read(max_age=0))

    async def read(self, *, stage: str = CURRENT, max_age: float | None = None) -> dict[str, Any]:
        """The secret's JSON object, cached if read less than ``max_age`` seconds ago (default: the TTL)."""
        max_age = self.ttl if max_age is None else max_age
        return await self._read(stage, lambda fetched_at: self.clock() - fetched_at < max_age)

    async def read_since(self, since: float, *, stage: str = CURRENT) -> dict[str, Any]:
        """The secret as read at ``since`` (a ``clock()`` time) or later.

        Concurrent callers share one ``GetSecretValue``: after a rotation, the connections the database
        refuses at once cause one read, not one each.
        """
        return await self._read(stage, lambda fetched_at: fetched_at >= since)

    async def _read(self, stage: str, fresh: Callable[[float], bool]) -> dict[str, Any]:
        cached = self._cache.get(stage)
        if cached is not None and fresh(cached[1]):
            return cached[0]
        async with self._locks.setdefault(stage, asyncio.Lock()):
            cached = self._cache.get(stage)
            if cached is not None and fresh(cached[1]):  # another task read it while this one waited
                return cached[0]
            started = self.clock()
            value = self._parse(await self._fetch(stage))
            self._cache[stage] = (value, started)
            return value

    async def current(self) -> dict[str, Any]:
        """The current version, cached for the TTL; when AWS fails, the last good read (with a warning)."""
        cached = self._cache.get(CURRENT)
        if cached is not None and self.clock() < self._retry_at:
            return cached[0]
        try:
            return await self.read()
        except ConfigurationError as exc:
            if cached is None:
                raise
            self._retry_at = self.clock() + min(self.ttl, _RETRY_AFTER_FAILURE)
            logger.warning("secret refresh failed; keeping the cached version", extra={"error": str(exc)})
            return cached[0]

    async def version(self, stage: str, since: float) -> dict[str, Any] | None:
        """The version labelled ``stage`` (``AWSCURRENT``, ``AWSPENDING``...), read at ``since`` or later;
        ``None`` when there is none."""
        try:
            return await self.read_since(since, stage=stage)
        except ConfigurationError as exc:
            if stage == CURRENT:
                logger.warning("could not read the secret again", extra={"error": str(exc)})
            return None

    async def keep_fresh(self) -> None:
        """Re-read the secret every TTL until cancelled; failures are logged and the cached version kept."""
        while True:
            await asyncio.sleep(self.ttl)
            try:
                await self.read(max_age=0)
            except ConfigurationError as exc:
                logger.warning("secret refresh failed; keeping the cached version", extra={"error": str(exc)})

    async def _fetch(self, stage: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = await self._client.get_secret_value(SecretId=self.secret_id, VersionStage=stage)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "ResourceNotFoundException":
                what = "secret" if stage == CURRENT else f"{stage} version of the secret"
                raise ConfigurationError(
                    f"the {what} {self.secret_id} ({self.setting}) does not exist in this account and "
                    f"region: create it, or set {self.setting} to its name or ARN and AWS_REGION to its "
                    "region"
                ) from exc
            if code == "InvalidRequestException":
                raise ConfigurationError(
                    f"the secret {self.secret_id} ({self.setting}) cannot be read now "
                    "(InvalidRequestException"
                    f"; is it scheduled for deletion?): restore it or point {self.setting} at another "
                    "secret"
                ) from exc
            raise self._failure(exc) from exc
        except BotoCoreError as exc:
            raise self._failure(exc) from exc
        secret = response.get("SecretString")
        if secret is None:
            raise ConfigurationError(
                f"the secret {self.secret_id} ({self.setting}) holds SecretBinary; store a JSON object "
                "as "
                "SecretString instead"
            )
        return str(secret)

    def _failure(self, exc: BaseException) -> ConfigurationError:
        return describe_aws_failure(
            exc,
            what=f"the secret {self.secret_id}",
            setting=self.setting,
            permission="secretsmanager:GetSecretValue",
        )

    def _parse(self, raw: str) -> dict[str, Any]:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            # ``from None``: the decoder's exception holds the document, i.e. the secret.
            raise ConfigurationError(
                f"the secret {self.secret_id} ({self.setting}) is not valid JSON (error at line "
                f"{exc.lineno} "
                f"column {exc.colno}): store a JSON object, such as "
                '{"DATABASE_URL": "postgresql://..."} or an RDS secret '
                '{"username", "password", "host", "port", '
                '"dbname"}'
            ) from None
        if not isinstance(value, dict):
            raise ConfigurationError(
                f"the secret {self.secret_id} ({self.setting}) is JSON but not an object "
                f"({type(value).__name__}); store an object whose keys are settings, such as "
                '{"DATABASE_URL": "postgresql://..."}'
            )
        return value

    def settings_from(self, secret: Mapping[str, Any]) -> dict[str, SettingValue]:
        """The settings a secret holds, by environment name: all its keys; for the owner's secret, its
        ``DATABASE_MIGRATE_URL`` alone."""
        label = self.label
        values = {key.upper(): SettingValue(value, label) for key, value in secret.items() if key not in _RDS_KEYS}
        if self.url_setting != "DATABASE_URL":
            values = {key: value for key, value in values.items() if key == self.url_setting}
        if "password" in secret and self.url_setting not in values:
            values[self.url_setting] = SettingValue(self._rds_url(secret), label)
        return values

    def _rds_url(self, secret: Mapping[str, Any]) -> str | DatabaseCredentials:
        engine = str(secret.get("engine") or "postgres").lower()
        if engine not in _POSTGRES_ENGINES:
            raise ConfigurationError(
                f"the secret {self.secret_id} ({self.setting}) is for the {engine!r} engine; productos "
                "needs "
                "a PostgreSQL database (engine postgres)"
            )
        credentials = credentials_from(secret)
        assert credentials is not None  # "password" in secret
        host = secret.get("host")
        if not host:
            # An RDS-managed master user secret: credentials only. They complete a lower DATABASE_URL (or
            # DATABASE_MIGRATE_URL).
            return credentials
        host = str(host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        user = quote(credentials.user or "postgres", safe="")
        password = quote(credentials.password, safe="")
        dbname = quote(str(secret.get("dbname") or "postgres"), safe="")
        return f"postgresql://{user}:{password}@{host}:{secret.get('port') or 5432}/{dbname}"


def credentials_from(secret: Mapping[str, Any], url_key: str = "DATABASE_URL") -> DatabaseCredentials | None:
    """The database login a secret holds: RDS ``username``/``password``, or the user and password of its
    ``url_key`` (``DATABASE_URL``); ``None`` when it holds neither."""
    if "password" in secret:
        user = secret.get("username")
        return DatabaseCredentials(password=str(secret["password"]), user=str(user) if user else None)
    for key, value in secret.items():
        if key.upper() == url_key and isinstance(value, str):
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                url = make_url(value)
            except ArgumentError:
                return None
            if url.password is None:
                return None
            return DatabaseCredentials(password=str(url.password), user=url.username)
    return None


class SecretDatabaseCredentials:
    """New connections log in with the credentials of the secret's current version.

    The secret is cached for its TTL and refreshed in the background. When the server refuses a login, the
    secret is read again, once, and its current, pending and previous versions are tried in that order: a
    rotation function sets the new password in the database before it promotes the ``AWSPENDING`` version, and
    a person may update the secret before the database (``AWSPREVIOUS`` still works there). The refused login
    is tried last once more, in case the database changed while it was on its way.
    """

    def __init__(self, source: SecretsManagerSource) -> None:
        self.source = source

    async def get(self) -> DatabaseCredentials:
        credentials = credentials_from(await self.source.current(), self.source.url_setting)
        if credentials is None:
            raise ConfigurationError(
                f"the secret {self.source.secret_id} ({self.source.setting}) no longer holds a password or "
                f"{self.source.url_setting}; restore its username and password keys"
            )
        return credentials

    async def after_auth_failure(self, failed: DatabaseCredentials) -> Sequence[DatabaseCredentials]:
        since = self.source.clock()
        current, pending, previous = await asyncio.gather(
            self.source.version(CURRENT, since),
            self.source.version(PENDING, since),
            self.source.version(PREVIOUS, since),
        )
        candidates: list[DatabaseCredentials] = []
        for secret in (current, pending, previous):
            credentials = credentials_from(secret, self.source.url_setting) if secret is not None else None
            if credentials is not None and credentials != failed and credentials not in candidates:
                candidates.append(credentials)
        logger.info(
            "database login refused; retrying with the secret read again",
            extra={"secret_id": self.source.secret_id, "candidates": len(candidates)},
        )
        # Last, the refused login again: the database may have changed its password while this one was sent.
        return [*candidates, failed]


def supplies_login(
    secret: Mapping[str, Any], *, user: str | None, password: str | None, url_key: str = "DATABASE_URL"
) -> bool:
    """Whether a database URL's login (``user``, ``password``) is the one ``secret`` holds, so that new
    connections must follow the secret's rotations (``url_key``: the secret's own key for that URL)."""
    credentials = credentials_from(secret, url_key)
    if credentials is None or password is None or credentials.password != password:
        return False
    return credentials.user is None or user is None or credentials.user == user
