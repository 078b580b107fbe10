"""AWS adapters through aioboto3: settings sources, rotating secrets, RDS IAM tokens.

Clients come from one ``AwsClients`` (one session, one client per service) opened in the app's lifespan.
"""

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
