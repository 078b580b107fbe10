"""AWS adapters through aioboto3: settings sources, rotating secrets, RDS IAM tokens.

Clients come from one ``AwsClients`` (one session, one client per service) opened in the app's lifespan. Each
adapter's module loads when it is first used, so that a worker keeps only the ones its settings need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from productos.infra.aws.clients import AwsClients, AwsConfig
    from productos.infra.aws.rds_iam import RdsIamTokenProvider
    from productos.infra.aws.secretsmanager import (
        SecretDatabaseCredentials,
        SecretsManagerSource,
        credentials_from,
        supplies_login,
    )
    from productos.infra.aws.ssm import SsmParameterSource

__all__ = [
    "AwsClients",
    "AwsConfig",
    "RdsIamTokenProvider",
    "SecretDatabaseCredentials",
    "SecretsManagerSource",
    "SsmParameterSource",
    "credentials_from",
    "supplies_login",
]

_HOMES = {
    "AwsClients": "clients",
    "AwsConfig": "clients",
    "RdsIamTokenProvider": "rds_iam",
    "SecretDatabaseCredentials": "secretsmanager",
    "SecretsManagerSource": "secretsmanager",
    "credentials_from": "secretsmanager",
    "supplies_login": "secretsmanager",
    "SsmParameterSource": "ssm",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
