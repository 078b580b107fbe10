"""The Auto Scaling group's maximum size, for the connection budget (``autoscaling:DescribeAutoScalingGroups``)."""

from __future__ import annotations

from typing import Any

from productos.domain.errors import ConfigurationError
from productos.infra.aws.clients import describe_aws_failure

__all__ = ["asg_max_size"]


async def asg_max_size(autoscaling: Any, name: str, *, setting: str = "PRODUCTOS_ASG_NAME") -> int:
    """The ``MaxSize`` of the Auto Scaling group ``name``.

    Args:
        autoscaling: an aioboto3 ``autoscaling`` client.
        name: the group's name.
        setting: what named the group, for error messages.

    Raises:
        ConfigurationError: the group does not exist, or it could not be read (the message names the IAM
            permission and the setting that avoids the call, ``PRODUCTOS_ASG_MAX_SIZE``).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        found = await autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    except (ClientError, BotoCoreError) as exc:
        failure = describe_aws_failure(
            exc,
            what=f"the Auto Scaling group {name!r}",
            setting=setting,
            permission="autoscaling:DescribeAutoScalingGroups",
        )
        raise ConfigurationError(f"{failure} (or set PRODUCTOS_ASG_MAX_SIZE)") from exc
    groups = found.get("AutoScalingGroups") or []
    if not groups:
        raise ConfigurationError(
            f"there is no Auto Scaling group {name!r} in this region: check {setting} (or set PRODUCTOS_ASG_MAX_SIZE)"
        )
    return int(groups[0]["MaxSize"])
