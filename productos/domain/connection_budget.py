"""The connection budget: the database connections a service may hold at worst, and the pool sizes that fit it.

Every gunicorn worker of every instance keeps a pool of its own, and productos keeps open every connection it
opens, overflow ones included (``productos.infra.db.engine``). At the Auto Scaling group's maximum a service
therefore holds at worst::

    instances (the ASG's maximum) x WORKERS x (DB_POOL_SIZE + DB_MAX_OVERFLOW)

connections to its database server, times the pools each worker keeps there (a read replica's pools count on
the replica's server, or on the same one when ``DATABASE_READ_URL`` leads there too). That worst case must fit
the budget (``DB_CONNECTION_BUDGET``): the service's share of the server's ``max_connections``, less the slots
the server reserves (``superuser_reserved_connections``, and RDS's ``rds.rds_superuser_reserved_connections``)
and what other clients hold. Past it, logins fail with ``TooManyConnectionsError`` (53300) when the group scales
out. Behind a transaction-mode pooler (``DB_POOLER=transaction``: PgBouncer, RDS Proxy) the pools hold
connections to the pooler, and it is the pooler's own pool of server connections that must fit.

Pure arithmetic, one place for ``productos check``, ``productos aws pool-sizes`` and deploy/cloudformation.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from productos.domain.errors import ConfigurationError

__all__ = ["ALARM_SHARE", "ConnectionDemand", "PoolSizes", "fit_pool_sizes"]

#: The RDS ``DatabaseConnections`` alarm fires at this share of the budget.
ALARM_SHARE = 0.8


@dataclass(frozen=True)
class PoolSizes:
    """``DB_POOL_SIZE`` and ``DB_MAX_OVERFLOW`` of each worker."""

    pool_size: int
    max_overflow: int = 0

    @property
    def per_worker(self) -> int:
        """The connections one worker may hold: productos keeps overflow connections open as well."""
        return self.pool_size + self.max_overflow


@dataclass(frozen=True)
class ConnectionDemand:
    """The connections a service holds on one database server with every pool full.

    Attributes:
        instances: instances at once at worst (the Auto Scaling group's maximum; 1 for a lone server).
        workers: ``WORKERS`` of each instance.
        per_worker: ``DB_POOL_SIZE + DB_MAX_OVERFLOW``.
        pools: pools each worker keeps on this server (2 when a read replica's URL leads to the same server).
    """

    instances: int
    workers: int
    per_worker: int
    pools: int = 1

    def __post_init__(self) -> None:
        for name in ("instances", "workers", "per_worker", "pools"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1, not {getattr(self, name)}")

    @property
    def total(self) -> int:
        return self.instances * self.workers * self.per_worker * self.pools

    def describe(self) -> str:
        """``10 instances x 2 workers x 4 connections = 80``."""
        pools = f" x {self.pools} pools" if self.pools > 1 else ""
        return (
            f"{self.instances} instance{'s' if self.instances != 1 else ''} x {self.workers} "
            f"worker{'s' if self.workers != 1 else ''} x {self.per_worker} "
            f"connection{'s' if self.per_worker != 1 else ''}{pools} = {self.total}"
        )

    def fits(self, budget: int) -> bool:
        return self.total <= budget


def fit_pool_sizes(
    budget: int, *, instances: int, workers: int, pools: int = 1, ceiling: int | None = None
) -> PoolSizes:
    """The largest pool per worker whose worst case fits ``budget``, and no larger than ``ceiling``.

    All of it is ``DB_POOL_SIZE``, with ``DB_MAX_OVERFLOW`` 0: productos keeps overflow connections open like the
    others, so only the sum matters, and 0 says that what is opened is held.

    Args:
        budget: the connections the service may hold on the server (``DB_CONNECTION_BUDGET``).
        instances: the Auto Scaling group's maximum.
        workers: ``WORKERS`` of each instance.
        pools: pools each worker keeps on the server.
        ceiling: at most this many per worker (a pool larger than the work needs only holds connections idle).

    Raises:
        ConfigurationError: not even one connection per worker fits; the message says what to change.
    """
    demand = ConnectionDemand(instances, workers, 1, pools)
    if ceiling is not None and ceiling < 1:
        raise ConfigurationError(f"the ceiling must be at least 1 connection per worker, not {ceiling}")
    if budget < demand.total:
        raise ConfigurationError(
            f"a budget of {budget} connections cannot give one connection to each worker at the ASG's maximum "
            f"({demand.describe()}): raise the budget (a larger database instance class), lower the ASG's maximum "
            "or WORKERS, or connect through a transaction-mode pooler (DB_POOLER=transaction: PgBouncer, RDS Proxy)"
        )
    per_worker = budget // demand.total
    return PoolSizes(per_worker if ceiling is None else min(per_worker, ceiling), 0)
