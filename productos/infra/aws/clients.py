"""One aioboto3 session and one client per AWS service, for the life of a process (or of a lifespan).

Clients are created on first use and reused for every call; ``aclose()`` (or leaving ``async with``) closes
them. aioboto3 is imported only when the first client is created, so a service that uses no AWS imports none
of it.

Region: ``region`` (``AWS_REGION``, else ``AWS_DEFAULT_REGION``, else the AWS config file). Endpoint: botocore
honours ``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>`` itself, which is how tests reach moto.
Credentials: botocore's default chain (environment, profile, EC2 instance role through IMDSv2).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from productos.domain.errors import ConfigurationError

if TYPE_CHECKING:
    from productos.settings import Settings

logger = logging.getLogger(__name__)

# botocore logs whole response bodies (secret values included) at DEBUG; LOG_LEVEL=debug must not leak them.
_BODY_LOGGERS = ("botocore.parsers", "botocore.endpoint", "aiobotocore.endpoint", "aiobotocore.parsers")
_BODY_MARKERS = ("Response body", "Response headers", "Making request for", "Sending http request")


class _DropBodies(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        return not message.startswith(_BODY_MARKERS)


_DROP_BODIES = _DropBodies()


def _protect_logs() -> None:
    for name in _BODY_LOGGERS:
        target = logging.getLogger(name)
        if _DROP_BODIES not in target.filters:
            target.addFilter(_DROP_BODIES)


@dataclass(frozen=True)
class AwsConfig:
    """How clients connect. Retries use botocore's ``standard`` mode (exponential backoff with jitter)."""

    region: str | None = None
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    max_attempts: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> AwsConfig:
        return cls(
            region=settings.aws_region,
            connect_timeout=settings.aws_connect_timeout,
            read_timeout=settings.aws_read_timeout,
            max_attempts=settings.aws_max_attempts,
        )


class AwsClients:
    """One aioboto3 ``Session`` and, per service, one client created on first use and then reused.

    Open it where the process' other resources open (the FastAPI lifespan, a CLI command) and close it with
    them::

        async with AwsClients(AwsConfig(region="eu-west-1")) as aws:
            ssm = await aws.client("ssm")
    """

    def __init__(self, config: AwsConfig | None = None, *, session: Any = None) -> None:
        self.config = config or AwsConfig()
        self._session = session
        self._clients: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._stack = AsyncExitStack()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, *, session: Any = None) -> AwsClients:
        return cls(AwsConfig.from_settings(settings), session=session)

    @property
    def region(self) -> str | None:
        """The region clients use: the configured one, else botocore's (``AWS_DEFAULT_REGION``, config)."""
        if self.config.region:
            return self.config.region
        return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None

    @property
    def created(self) -> tuple[str, ...]:
        """The services that have a client (for tests and diagnostics)."""
        return tuple(self._clients)

    async def client(self, service: str) -> Any:
        """The client of ``service`` (``"ssm"``, ``"secretsmanager"``...), created once.

        Raises:
            ConfigurationError: no region is configured, or the clients are closed.
        """
        existing = self._clients.get(service)
        if existing is not None:
            return existing
        lock = self._locks.setdefault(service, asyncio.Lock())
        async with lock:
            if service in self._clients:
                return self._clients[service]
            if self._closed:
                raise ConfigurationError(f"the AWS clients are closed; cannot open a {service} client")
            from botocore.exceptions import NoRegionError

            try:
                client = await self._stack.enter_async_context(self._make(service))
            except NoRegionError as exc:
                raise missing_region(service) from exc
            self._clients[service] = client
            logger.debug("aws client opened", extra={"aws_service": service, "region": self.region})
            return client

    def _make(self, service: str) -> Any:
        from botocore.config import Config

        _protect_logs()
        if self._session is None:
            import aioboto3

            self._session = aioboto3.Session()
        config = Config(
            connect_timeout=self.config.connect_timeout,
            read_timeout=self.config.read_timeout,
            retries={"mode": "standard", "total_max_attempts": self.config.max_attempts},
        )
        return self._session.client(service, region_name=self.region, config=config)

    async def aclose(self) -> None:
        """Close every client. Idempotent."""
        self._closed = True
        await self._stack.aclose()
        self._clients.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def missing_region(service: str) -> ConfigurationError:
    return ConfigurationError(
        f"no AWS region for {service}: set AWS_REGION (for example AWS_REGION=us-east-1; on EC2 the User "
        "Data "
        "script can read it from the instance metadata)"
    )


def _error_of(response: dict[str, Any]) -> tuple[str, str]:
    """The error code and message; from an XML body too (proxies, emulators) where botocore found none."""
    error = response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = str(error.get("Message", "")).strip()
    if message.startswith("<"):
        xml_code = re.search(r"<Code>([^<]+)</Code>", message)
        xml_message = re.search(r"<Message>([^<]*)</Message>", message)
        code = xml_code.group(1) if xml_code else code
        message = xml_message.group(1).strip() if xml_message else ""
    if code.isdigit():
        status = int(code)
        code = {403: "AccessDenied", 401: "UnrecognizedClientException"}.get(status, f"HTTP {status}")
    return code, message[:300]


def describe_aws_failure(
    exc: BaseException, *, what: str, setting: str, permission: str, action: str = "read"
) -> ConfigurationError:
    """Turn a botocore error into a ``ConfigurationError`` that says what failed and how to fix it.

    Args:
        exc: the botocore/aiobotocore error.
        what: the object, e.g. ``"the SSM parameters under /productos-api/"``; never a value.
        setting: the setting that named it (``PRODUCTOS_SSM_PATH``).
        permission: the IAM action needed (``ssm:GetParametersByPath``).
        action: what was being done to it (``read``, ``apply``), for the message.
    """
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        HTTPClientError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    if isinstance(exc, ClientError):
        code, message = _error_of(exc.response)
        detail = f"{code}: {message}" if message else code
        if code in {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"} or "KMS" in code:
            fix = (
                f"allow {permission} on {what} (and kms:Decrypt on its KMS key) in the instance role's "
                "policy; see the IAM policy in docs/configuration.md"
            )
        elif code in {
            "UnrecognizedClientException",
            "InvalidClientTokenId",
            "ExpiredTokenException",
            "InvalidSignatureException",
            "SignatureDoesNotMatch",
        }:
            fix = "AWS rejected the credentials: check the instance role, or AWS_ACCESS_KEY_ID/AWS_PROFILE"
        elif code in {"ThrottlingException", "TooManyRequestsException"}:
            fix = "AWS throttled the request: retry, or raise PRODUCTOS_AWS_MAX_ATTEMPTS"
        else:
            fix = f"check {setting}"
        return ConfigurationError(f"cannot {action} {what} ({setting}): {detail}; {fix}")
    if isinstance(exc, NoRegionError):
        return missing_region(permission.split(":")[0])
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ConfigurationError(
            f"cannot {action} {what} ({setting}): no AWS credentials; attach an IAM instance profile to the "
            "instance, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        )
    if isinstance(exc, ConnectionError | HTTPClientError):
        endpoint = getattr(exc, "kwargs", {}).get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL") or ""
        where = f" at {endpoint}" if endpoint else ""
        return ConfigurationError(
            f"cannot {action} {what} ({setting}): the AWS endpoint{where} is unreachable ({type(exc).__name__}); "
            "check the instance's route to AWS (NAT gateway or VPC endpoint, security groups), AWS_REGION, "
            "and AWS_ENDPOINT_URL if set"
        )
    return ConfigurationError(f"cannot {action} {what} ({setting}): {type(exc).__name__}")
