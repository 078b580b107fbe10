"""The dimension sets the instance's datums go out with.

Each metric goes out with ``AutoScalingGroupName`` (what the scaling policy reads) and again with
``AutoScalingGroupName`` and ``InstanceId``. The group comes from ``PRODUCTOS_ASG_NAME``, else from the
instance metadata's tag, else from ``autoscaling:DescribeAutoScalingInstances``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from productos.domain.metrics_ports import ASG_DIMENSION, INSTANCE_DIMENSION

logger = logging.getLogger(__name__)

DimensionSet = tuple[tuple[str, str], ...]


async def resolve_dimension_sets(
    asg_name: str | None,
    *,
    metadata: Any = None,
    autoscaling: Callable[[], Awaitable[Any]] | None = None,
) -> list[DimensionSet]:
    """``[(ASG,)]`` and ``[(ASG, InstanceId)]``, from ``PRODUCTOS_ASG_NAME`` or the instance's metadata.

    Args:
        asg_name: the configured ASG name (``PRODUCTOS_ASG_NAME``); wins over the metadata's tag.
        metadata: an ``InstanceMetadata`` client; ``None`` skips it.
        autoscaling: an async factory of an ``autoscaling`` client, asked for the instance's group when the
            metadata has an instance id but no tag (instance metadata tags off in the launch template).
    """
    identity = await metadata.identity() if metadata is not None else None
    instance_id = identity.instance_id if identity else None
    asg = asg_name or (identity.asg_name if identity else None)
    if asg is None and instance_id and autoscaling is not None:
        asg = await _asg_from_api(autoscaling, instance_id)
    sets: list[DimensionSet] = []
    if asg:
        sets.append(((ASG_DIMENSION, asg),))
    if instance_id:
        instance = (INSTANCE_DIMENSION, instance_id)
        sets.append(((ASG_DIMENSION, asg), instance) if asg else (instance,))
    if not asg:
        logger.warning(
            "no Auto Scaling group known (set PRODUCTOS_ASG_NAME, or enable instance metadata tags): the "
            "scaling policy's DBPoolUtilization is not published"
        )
    if not sets:
        sets.append(())
    return sets


async def _asg_from_api(autoscaling: Callable[[], Awaitable[Any]], instance_id: str) -> str | None:
    try:
        client = await autoscaling()
        answer = await client.describe_auto_scaling_instances(InstanceIds=[instance_id])
    except Exception as exc:
        logger.info("autoscaling:DescribeAutoScalingInstances failed (%s)", type(exc).__name__)
        return None
    for item in answer.get("AutoScalingInstances", []):
        return str(item["AutoScalingGroupName"])
    return None
