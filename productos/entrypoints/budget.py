"""The connection budget at the command line: ``productos check``'s ``budget`` step, and the Auto Scaling group's
maximum that it and ``productos aws pool-sizes`` size the pools for (``productos.domain.connection_budget``)."""

from __future__ import annotations

from contextlib import AsyncExitStack

from sqlalchemy.ext.asyncio import AsyncConnection

from productos.domain.connection_budget import ConnectionDemand, fit_pool_sizes
from productos.domain.errors import ConfigurationError
from productos.infra.aws.autoscaling import asg_max_size
from productos.infra.aws.clients import AwsClients
from productos.infra.db.budget import server_connections
from productos.infra.db.url import parse_database_url
from productos.settings import Settings

__all__ = ["BudgetExceeded", "asg_maximum", "budget_hint", "check_budget", "pool_ceiling"]


class BudgetExceeded(Exception):
    """The worst case of the service's connections does not fit its budget."""

    def __init__(self, message: str, demand: ConnectionDemand, budget: int) -> None:
        super().__init__(message)
        self.demand = demand
        self.budget = budget


async def asg_maximum(settings: Settings, aws: AwsClients | None, *, required: bool = False) -> tuple[int, str]:
    """The instances there may be at once, and where that figure came from.

    ``PRODUCTOS_ASG_MAX_SIZE``, else the ``MaxSize`` of the group ``PRODUCTOS_ASG_NAME`` names (through ``aws``,
    or clients opened for the call), else 1 (no group known: a lone server), unless ``required``.

    Raises:
        ConfigurationError: the group could not be read, or none is known and ``required``.
    """
    if settings.asg_max_size is not None:
        return settings.asg_max_size, "PRODUCTOS_ASG_MAX_SIZE"
    if settings.asg_name:
        async with AsyncExitStack() as stack:
            if aws is None:
                aws = await stack.enter_async_context(AwsClients.from_settings(settings))
            size = await asg_max_size(await aws.client("autoscaling"), settings.asg_name)
        return size, f"the MaxSize of {settings.asg_name}"
    if required:
        raise ConfigurationError(
            "no Auto Scaling group: give --asg-max-size or --asg-name (PRODUCTOS_ASG_MAX_SIZE, PRODUCTOS_ASG_NAME)"
        )
    return 1, "no Auto Scaling group known: PRODUCTOS_ASG_MAX_SIZE, PRODUCTOS_ASG_NAME"


def pool_ceiling() -> int:
    """The most connections per worker that sizing from a budget gives: the library's defaults of
    ``DB_POOL_SIZE + DB_MAX_OVERFLOW`` (a pool larger than the work needs only holds connections idle)."""
    fields = Settings.model_fields
    return int(fields["db_pool_size"].default) + int(fields["db_max_overflow"].default)


def _pools_on_primary(settings: Settings) -> tuple[int, str]:
    """How many pools each worker keeps on the primary's server: a read replica's URL may lead there too."""
    if settings.database_read_url is None:
        return 1, ""
    primary = parse_database_url(settings.database_url.get_secret_value()).url
    replica = parse_database_url(settings.database_read_url.get_secret_value(), setting="DATABASE_READ_URL").url
    if (primary.host, primary.port or 5432) == (replica.host, replica.port or 5432):
        return 2, "; DATABASE_READ_URL leads to the same server: its pools count here too"
    return 1, "; DATABASE_READ_URL's pools, as many, count on the replica's own server"


async def check_budget(settings: Settings, connection: AsyncConnection, *, aws: AwsClients | None) -> str:
    """The worst case of the service's connections against its budget, as ``productos check`` reports it.

    The budget is ``DB_CONNECTION_BUDGET``, else what the server on ``connection`` allows (``max_connections``
    less the reserved slots). Behind a transaction-mode pooler the pools hold connections to the pooler: the
    figures are reported, and the pooler's own pool is what must fit.

    Raises:
        BudgetExceeded: the worst case is over the budget.
        ConfigurationError: the Auto Scaling group's maximum could not be read.
    """
    instances, instances_from = await asg_maximum(settings, aws)
    pools, replica_note = _pools_on_primary(settings)
    demand = ConnectionDemand(instances, settings.workers, settings.db_pool_size + settings.db_max_overflow, pools)
    if settings.db_connection_budget is not None:
        budget, budget_from = settings.db_connection_budget, "(DB_CONNECTION_BUDGET)"
    else:
        server = await server_connections(connection)
        budget, budget_from = server.available, f"= {server.describe()}"
    figures = f"worst case {demand.describe()} ({instances_from}); budget {budget} {budget_from}"
    if settings.db_pooler == "transaction":
        return f"{figures}: connections to the pooler (DB_POOLER=transaction), whose own pool must fit the budget"
    if not demand.fits(budget):
        raise BudgetExceeded(f"{figures}: over the budget by {demand.total - budget}", demand, budget)
    return figures + replica_note


def budget_hint(exc: BaseException) -> str:
    """What to change when ``check_budget`` failed."""
    if isinstance(exc, BudgetExceeded):
        demand = exc.demand
        try:
            fit = fit_pool_sizes(
                exc.budget,
                instances=demand.instances,
                workers=demand.workers,
                pools=demand.pools,
                ceiling=demand.per_worker,
            )
        except ConfigurationError:
            sizes = "not even one connection per worker fits"
        else:
            sizes = f"DB_POOL_SIZE={fit.pool_size} with DB_MAX_OVERFLOW=0 fits"
        return (
            f"{sizes}; or lower WORKERS or the ASG's maximum, give the service a larger DB_CONNECTION_BUDGET (a "
            "larger database instance class), or connect through a transaction-mode pooler: DB_POOLER=transaction "
            "with PgBouncer or RDS Proxy (`productos aws pool-sizes` and deploy/cloudformation.py size the pools "
            "from the budget)"
        )
    if isinstance(exc, ConfigurationError):
        return "set PRODUCTOS_ASG_MAX_SIZE to the Auto Scaling group's maximum, or allow the call named above"
    return "the server's max_connections could not be read: set DB_CONNECTION_BUDGET"
