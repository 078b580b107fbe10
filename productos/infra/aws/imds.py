"""The instance's identity from the EC2 instance metadata service, IMDSv2 only.

A session token first (``PUT /latest/api/token``), then ``GET``s that carry it: the instance id
(``/latest/meta-data/instance-id``) and the ASG's name from the instance's tags
(``/latest/meta-data/tags/instance/aws:autoscaling:groupName``, present when the launch template enables
instance metadata tags). Every request has a short timeout and the whole lookup a deadline, so a machine
without a metadata service (a laptop, CI, a container whose hop limit drops the token's answer) gets ``None``
quickly rather than a hang. IMDSv1 is never tried.

The endpoint and the off switch are botocore's: ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (default
``http://169.254.169.254``) and ``AWS_EC2_METADATA_DISABLED=true``. The client is a few lines of HTTP/1.1 on
asyncio streams: the metadata service speaks plain HTTP on a link-local address, and this needs no library.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a URL path, not a secret
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"
REGION_PATH = "/latest/meta-data/placement/region"
ASG_TAG_PATH = "/latest/meta-data/tags/instance/aws:autoscaling:groupName"
TOKEN_TTL_SECONDS = 21600
MAX_RESPONSE_BYTES = 65536


class MetadataUnavailable(Exception):
    """No answer, or not the answer expected, from the metadata service."""


@dataclass(frozen=True)
class InstanceIdentity:
    """What the metadata service said about this instance; ``None`` for what it did not say."""

    instance_id: str | None = None
    asg_name: str | None = None
    region: str | None = None


def metadata_disabled() -> bool:
    return os.environ.get("AWS_EC2_METADATA_DISABLED", "").strip().lower() == "true"


class InstanceMetadata:
    """An IMDSv2 client.

    Args:
        endpoint: the service's base URL; by default ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` or
            ``http://169.254.169.254``.
        timeout: seconds for each request (connect, send and read).
        attempts: tries per request (a dropped packet on a busy host); the deadline bounds them all.
    """

    def __init__(self, endpoint: str | None = None, *, timeout: float = 1.0, attempts: int = 2) -> None:
        url = urlsplit(endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_ENDPOINT)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"the metadata endpoint must be http://host[:port], not {endpoint!r}")
        self._host = url.hostname
        self._port = url.port or 80
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._token: str | None = None

    async def token(self) -> str:
        """A session token (cached for the client's life; IMDS tokens last 6 hours, the lookups seconds)."""
        if self._token is None:
            status, body = await self._request(
                "PUT", TOKEN_PATH, {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)}
            )
            if status != 200 or not body:
                raise MetadataUnavailable(f"token: HTTP {status}")
            self._token = body
        return self._token

    async def get(self, path: str) -> str | None:
        """The value at ``path``; ``None`` when the service says it has none (404)."""
        status, body = await self._request("GET", path, {"X-aws-ec2-metadata-token": await self.token()})
        if status == 404:
            return None
        if status == 401:  # the token expired or was refused: one more with a new one
            self._token = None
            status, body = await self._request("GET", path, {"X-aws-ec2-metadata-token": await self.token()})
        if status != 200:
            raise MetadataUnavailable(f"{path}: HTTP {status}")
        return body

    async def identity(self, *, deadline: float = 3.0) -> InstanceIdentity | None:
        """The instance id, the ASG's name (from tags) and the region; ``None`` if there is no metadata
        service (or it is disabled). Never takes longer than ``deadline`` seconds."""
        if metadata_disabled():
            return None
        try:
            async with asyncio.timeout(deadline):
                instance_id = await self.get(INSTANCE_ID_PATH)
                asg_name = await self.get(ASG_TAG_PATH)
                region = await self.get(REGION_PATH)
        except (MetadataUnavailable, OSError, TimeoutError) as exc:
            logger.info("no instance metadata (%s): not on EC2, or IMDS unreachable", type(exc).__name__)
            return None
        if asg_name is None:
            logger.info(
                "the instance metadata has no aws:autoscaling:groupName tag: enable instance metadata tags "
                "in the launch template (InstanceMetadataTags=enabled), or set PRODUCTOS_ASG_NAME"
            )
        return InstanceIdentity(instance_id=instance_id or None, asg_name=asg_name or None, region=region or None)

    async def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        error: BaseException | None = None
        for _ in range(self._attempts):
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._once(method, path, headers)
            except (OSError, TimeoutError, MetadataUnavailable) as exc:
                error = exc
        assert error is not None
        raise MetadataUnavailable(f"{method} {path}: {type(error).__name__}") from error

    async def _once(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        reader, writer = await asyncio.open_connection(self._host, self._port)
        try:
            lines = [
                f"{method} {path} HTTP/1.1",
                f"Host: {self._host}",
                "Connection: close",
                "Content-Length: 0",
            ]
            lines += [f"{name}: {value}" for name, value in headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
            await writer.drain()
            raw = b""
            while len(raw) <= MAX_RESPONSE_BYTES and not _complete(raw):
                chunk = await reader.read(16384)
                if not chunk:
                    break
                raw += chunk
        finally:
            writer.close()
        return _parse(raw)


def _complete(raw: bytes) -> bool:
    """The response is whole: headers and as many body bytes as Content-Length says (the service may keep
    the connection open despite ``Connection: close``)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value.strip())
    return False


def _parse(raw: bytes) -> tuple[int, str]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise MetadataUnavailable("malformed response")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise MetadataUnavailable("malformed status line")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        body = body[: int(length)]
    return int(parts[1]), body.decode("utf-8", errors="replace").strip()
