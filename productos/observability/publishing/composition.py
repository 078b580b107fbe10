"""The composition: the publisher, figures source, dimensions and lease that ``Settings`` select, as one loop.

``open_metrics_publishing`` runs it for the app's life. Under gunicorn the lease and the hand-over state sit in
the Prometheus multiprocess directory, beside the files the figures are read from; the AWS clients (CloudWatch,
autoscaling) are created only by the worker that takes the lease.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from productos.domain.metrics_ports import MetricsPublisher
from productos.observability.publishing.dimensions import DimensionSet, resolve_dimension_sets
from productos.observability.publishing.lease import LOCK_FILE, FileLease
from productos.observability.publishing.loop import (
    DEFAULT_FLUSH_TIMEOUT,
    STATE_FILE,
    DimensionsResolver,
    PublisherFactory,
    PublishingLoop,
)
from productos.observability.publishing.sources import FiguresSource, MultiprocessSource

if TYPE_CHECKING:
    from productos.infra.aws.clients import AwsClients
    from productos.settings import Settings

logger = logging.getLogger(__name__)


@asynccontextmanager
async def open_metrics_publishing(
    settings: Settings,
    *,
    aws: AwsClients | None = None,
    source: FiguresSource | None = None,
    flush_timeout: float = DEFAULT_FLUSH_TIMEOUT,
) -> AsyncIterator[PublishingLoop | None]:
    """Run the publisher ``PRODUCTOS_METRICS_PUBLISHER`` selects for the app's life (``None`` when off).

    Args:
        settings: the service's settings.
        aws: the process' AWS clients (the CloudWatch client is created from them, once, by the holder).
        source: where figures come from; by default the Prometheus multiprocess directory (gunicorn with
            ``productos.gunicorn_conf``). Without one, pass a ``RegistrySource`` (a single process).
        flush_timeout: bound on the final flush at shutdown.
    """
    if settings.metrics_publisher == "none":
        yield None
        return
    from productos.observability.metrics import FLUSH_INTERVAL, multiprocess_dir

    directory = multiprocess_dir()
    if source is None and directory is None:
        logger.warning(
            "PRODUCTOS_METRICS_PUBLISHER=%s needs the workers' shared metrics: serve with `productos serve` "
            "(gunicorn -c python:productos.gunicorn_conf) or set PROMETHEUS_MULTIPROC_DIR; not publishing",
            settings.metrics_publisher,
        )
        yield None
        return
    if not settings.metrics_enabled:
        logger.warning("PRODUCTOS_METRICS_ENABLED=false: no metrics to publish")
        yield None
        return
    loop = PublishingLoop(
        _publisher_factory(settings, aws),
        source or MultiprocessSource(str(directory)),
        _dimensions_resolver(settings, aws),
        interval=settings.metrics_interval,
        lease=FileLease(Path(directory) / LOCK_FILE) if directory else None,
        state_path=Path(directory) / STATE_FILE if directory else None,
        flush_timeout=flush_timeout,
        # The other workers' last batched counts (written once a second) must reach the files first.
        settle=FLUSH_INTERVAL + 0.25 if directory else 0.0,
    )
    await loop.start()
    try:
        yield loop
    finally:
        await loop.stop()


def _publisher_factory(settings: Settings, aws: AwsClients | None) -> PublisherFactory:
    async def make() -> MetricsPublisher:
        if settings.metrics_publisher == "emf":
            from productos.infra.aws.emf import EmfPublisher

            return EmfPublisher(settings.cloudwatch_namespace)
        from productos.infra.aws.cloudwatch import CloudWatchPublisher

        if aws is None:
            raise RuntimeError("the CloudWatch publisher needs the process' AWS clients")
        return CloudWatchPublisher(await aws.client("cloudwatch"), settings.cloudwatch_namespace)

    return make


def _dimensions_resolver(settings: Settings, aws: AwsClients | None) -> DimensionsResolver:
    async def resolve() -> Sequence[DimensionSet]:
        from productos.infra.aws.imds import InstanceMetadata, metadata_disabled

        metadata = None if metadata_disabled() else InstanceMetadata()

        async def autoscaling() -> Any:
            assert aws is not None
            return await aws.client("autoscaling")

        return await resolve_dimension_sets(
            settings.asg_name,
            metadata=metadata,
            autoscaling=autoscaling if aws is not None else None,
        )

    return resolve
