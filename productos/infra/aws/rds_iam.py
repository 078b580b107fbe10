"""RDS IAM database authentication: a fresh token for every new connection.

``generate_db_auth_token`` signs locally with the instance role's credentials (no network call); a token is
valid for 15 minutes and only for logging in, so pooled connections outlive it. RDS accepts IAM logins only
over TLS: ``DATABASE_URL`` should end in ``?sslmode=require`` (or ``verify-full``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from productos.domain.errors import ConfigurationError
from productos.domain.settings_ports import DatabaseCredentials
from productos.infra.aws.clients import describe_aws_failure

logger = logging.getLogger(__name__)


class RdsIamTokenProvider:
    """Credentials for ``DB_IAM_AUTH=true``: the URL's user and a token signed for host, port and user.

    Args:
        client: an aioboto3 ``rds`` client, opened once and shared (``AwsClients.client("rds")``).
        host, port, user: the database endpoint and user, from ``DATABASE_URL``.
        region: the database's region; the client's when omitted.
    """

    def __init__(self, client: Any, *, host: str, port: int, user: str, region: str | None = None) -> None:
        if not host or not user:
            raise ConfigurationError(
                "DB_IAM_AUTH=true needs DATABASE_URL with a user and host, for example "
                "postgresql://app_user@mydb.abc123.us-east-1.rds.amazonaws.com:5432/productos?sslmode=require"
            )
        self._client = client
        self.host = host
        self.port = port
        self.user = user
        self.region = region or client.meta.region_name

    async def get(self) -> DatabaseCredentials:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            token = await self._client.generate_db_auth_token(
                DBHostname=self.host, Port=self.port, DBUsername=self.user, Region=self.region
            )
        except (BotoCoreError, ClientError) as exc:
            raise describe_aws_failure(
                exc,
                what=f"an IAM token for {self.user}@{self.host}:{self.port}",
                setting="DB_IAM_AUTH",
                permission="rds-db:connect",
            ) from exc
        return DatabaseCredentials(password=str(token), user=self.user)

    async def after_auth_failure(self, failed: DatabaseCredentials) -> Sequence[DatabaseCredentials]:
        # Every token is fresh already: a refused one means the role lacks rds-db:connect or the database user
        # lacks the rds_iam role, which another token does not fix.
        logger.warning(
            "IAM database login refused: grant rds-db:connect on this user to the instance role, and "
            "GRANT rds_iam TO the database user",
            extra={"db_user": self.user, "db_host": self.host},
        )
        return ()
