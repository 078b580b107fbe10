"""Settings from SSM Parameter Store: every parameter under a path, recursively, decrypted.

The last segment of a parameter's name names the setting: ``/productos-api/database-url`` → ``DATABASE_URL``,
``/productos-api/prod/log-level`` → ``LOG_LEVEL``. String and SecureString values are used as they are;
StringList values as their comma-separated text, as an environment variable would hold them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from productos.domain.errors import ConfigurationError
from productos.domain.settings_ports import SettingValue
from productos.infra.aws.clients import describe_aws_failure

logger = logging.getLogger(__name__)

#: GetParametersByPath returns at most 10 parameters per page.
MAX_PAGE_SIZE = 10


def normalize_path(path: str) -> str:
    """``/productos-api/`` → ``/productos-api`` (the form GetParametersByPath takes); ``/`` stays."""
    path = path.strip()
    if not path.startswith("/"):
        raise ConfigurationError(f"PRODUCTOS_SSM_PATH must start with '/' (for example /productos-api/); got {path!r}")
    return path.rstrip("/") or "/"


def setting_name(parameter_name: str) -> str:
    """The setting a parameter names: its last path segment, upper case, ``-`` as ``_``."""
    return parameter_name.rstrip("/").rsplit("/", 1)[-1].replace("-", "_").replace(".", "_").upper()


class SsmParameterSource:
    """Reads every parameter under ``path`` with one paginated ``GetParametersByPath`` sequence.

    Args:
        client: an aioboto3 ``ssm`` client, opened once and shared (``AwsClients.client("ssm")``).
        path: the hierarchy, e.g. ``/productos-api/``.
        page_size: parameters per page (1 to 10).
    """

    def __init__(self, client: Any, path: str, *, page_size: int = MAX_PAGE_SIZE) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ConfigurationError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        self._client = client
        self.path = normalize_path(path)
        self._page_size = page_size

    async def load(self) -> Mapping[str, SettingValue]:
        """The settings under the path, by environment name, labelled ``ssm:<parameter name>``.

        Raises:
            ConfigurationError: the path holds no parameter, two parameters name the same setting, or AWS
                refused or could not be reached. The message names the path and what to fix.
        """
        parameters = await self._fetch()
        if not parameters:
            raise ConfigurationError(
                f"no SSM parameters under {self.path} (PRODUCTOS_SSM_PATH): create them (for example "
                f"{self.path.rstrip('/')}/database-url as a SecureString), or fix PRODUCTOS_SSM_PATH; if "
                "they exist, "
                "check that the instance role may call ssm:GetParametersByPath on that path"
            )
        values: dict[str, SettingValue] = {}
        for parameter in parameters:
            name = str(parameter["Name"])
            key = setting_name(name)
            if key in values:
                raise ConfigurationError(
                    f"SSM parameters {values[key].source.removeprefix('ssm:')} and {name} both name the "
                    "setting "
                    f"{key}; keep one of them under {self.path}"
                )
            values[key] = SettingValue(str(parameter.get("Value", "")), f"ssm:{name}")
        return values

    async def _fetch(self) -> list[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError

        parameters: list[dict[str, Any]] = []
        paginator = self._client.get_paginator("get_parameters_by_path")
        pages = paginator.paginate(
            Path=self.path,
            Recursive=True,
            WithDecryption=True,
            PaginationConfig={"PageSize": self._page_size},
        )
        try:
            async for page in pages:
                parameters.extend(page.get("Parameters", []))
        except (BotoCoreError, ClientError) as exc:
            raise describe_aws_failure(
                exc,
                what=f"the SSM parameters under {self.path}",
                setting="PRODUCTOS_SSM_PATH",
                permission="ssm:GetParametersByPath",
            ) from exc
        logger.debug("ssm parameters read", extra={"ssm_path": self.path, "count": len(parameters)})
        return parameters
