"""Instance-wide CloudWatch metrics, published by one worker per instance, off the request path.

The pieces, one module each: ``figures`` (the instance's counters and their change over a step), ``sources``
(reading them from Prometheus), ``dimensions`` (the dimension sets the datums go out with), ``datums`` (one
step's datums), ``lease`` (the lock that elects the one publishing worker), ``loop`` (the publishing loop:
steps, buffer, retries, final flush, hand-over) and ``composition`` (``open_metrics_publishing``: the loop
``Settings`` select, for the app's life).
"""

from productos.observability.publishing.composition import open_metrics_publishing
from productos.observability.publishing.datums import distribution, step_datums
from productos.observability.publishing.dimensions import resolve_dimension_sets
from productos.observability.publishing.figures import Cumulative, Figures, PoolSample
from productos.observability.publishing.lease import FileLease
from productos.observability.publishing.loop import PublishingLoop
from productos.observability.publishing.sources import RegistrySource

__all__ = [
    "Cumulative",
    "Figures",
    "FileLease",
    "PoolSample",
    "PublishingLoop",
    "RegistrySource",
    "distribution",
    "open_metrics_publishing",
    "resolve_dimension_sets",
    "step_datums",
]
