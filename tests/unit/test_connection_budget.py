"""The connection budget's arithmetic (``productos.domain.connection_budget``) and the RDS connections alarm
built from it (``productos.infra.aws.resources``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from productos.domain.connection_budget import ALARM_SHARE, ConnectionDemand, PoolSizes, fit_pool_sizes
from productos.domain.errors import ConfigurationError
from productos.entrypoints.budget import pool_ceiling
from productos.infra.aws.resources import Deployment, alarms, dashboard, missing
from productos.settings import settings_from_values


def test_the_worst_case_is_instances_times_workers_times_the_pool() -> None:
    demand = ConnectionDemand(instances=10, workers=2, per_worker=30)
    assert demand.total == 600
    assert demand.describe() == "10 instances x 2 workers x 30 connections = 600"
    assert not demand.fits(97) and demand.fits(600)
    lone = ConnectionDemand(1, 1, 1, pools=2)
    assert lone.total == 2 and lone.describe() == "1 instance x 1 worker x 1 connection x 2 pools = 2"
    with pytest.raises(ConfigurationError, match="workers must be at least 1"):
        ConnectionDemand(10, 0, 4)


def test_the_guides_fleet_on_a_small_database_gets_three_connections_per_worker() -> None:
    # Ten instances of two workers on a budget of 75 (a db.t3.micro less its reserved slots).
    assert fit_pool_sizes(75, instances=10, workers=2) == PoolSizes(3, 0)
    assert fit_pool_sizes(80, instances=10, workers=2) == PoolSizes(4, 0)
    # A read replica's pools on the same server halve it.
    assert fit_pool_sizes(80, instances=10, workers=2, pools=2) == PoolSizes(2, 0)
    # A large budget is not a reason for large pools: the ceiling (the library's defaults) holds.
    assert fit_pool_sizes(5000, instances=2, workers=2, ceiling=30) == PoolSizes(30, 0)
    defaults = settings_from_values({})
    assert pool_ceiling() == defaults.db_pool_size + defaults.db_max_overflow


def test_a_budget_below_one_connection_per_worker_says_what_to_change() -> None:
    with pytest.raises(ConfigurationError) as raised:
        fit_pool_sizes(19, instances=10, workers=2)
    message = str(raised.value)
    assert "10 instances x 2 workers x 1 connection = 20" in message
    assert "DB_POOLER=transaction" in message and "RDS Proxy" in message
    with pytest.raises(ConfigurationError, match="ceiling"):
        fit_pool_sizes(100, instances=1, workers=1, ceiling=0)


@given(
    budget=st.integers(1, 100_000),
    instances=st.integers(1, 200),
    workers=st.integers(1, 64),
    pools=st.integers(1, 2),
    ceiling=st.none() | st.integers(1, 500),
)
def test_the_fitted_pool_is_the_largest_that_fits(
    budget: int, instances: int, workers: int, pools: int, ceiling: int | None
) -> None:
    try:
        sizes = fit_pool_sizes(budget, instances=instances, workers=workers, pools=pools, ceiling=ceiling)
    except ConfigurationError:
        assert budget < instances * workers * pools
        return
    worst = ConnectionDemand(instances, workers, sizes.per_worker, pools)
    assert worst.fits(budget) and sizes.max_overflow == 0
    if ceiling is None or sizes.per_worker < ceiling:
        assert not ConnectionDemand(instances, workers, sizes.per_worker + 1, pools).fits(budget)
    else:
        assert sizes.per_worker == ceiling


def test_the_rds_connections_alarm_fires_at_80_percent_of_the_budget() -> None:
    deployment = Deployment(asg_name="g", db_instance="productos-db", connection_budget=75, alarm_actions=("arn:t",))
    (alarm,) = [a for a in alarms(deployment) if a["AlarmName"] == "productos-api-rds-connections"]
    assert alarm == {
        "AlarmName": "productos-api-rds-connections",
        "AlarmDescription": "RDS connections at 80 % of the service's budget of 75 for 5 minutes",
        "Namespace": "AWS/RDS",
        "MetricName": "DatabaseConnections",
        "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": "productos-db"}],
        "Statistic": "Maximum",
        "Period": 60,
        "EvaluationPeriods": 5,
        "DatapointsToAlarm": 5,
        "Threshold": ALARM_SHARE * 75,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "missing",
        "AlarmActions": ["arn:t"],
        "OKActions": ["arn:t"],
    }
    # The guide's other alarms are as they were; without a budget there is no connections alarm, and the
    # command says which option adds it.
    names = [a["AlarmName"] for a in alarms(Deployment(asg_name="g", db_instance="productos-db"))]
    assert names == ["productos-api-rds-cpu"]
    assert "the RDS connections alarm: give --connection-budget (DB_CONNECTION_BUDGET)" in missing(
        Deployment(asg_name="g", db_instance="productos-db"), "alarms"
    )
    assert not any("connections alarm" in note for note in missing(deployment, "alarms"))
    with pytest.raises(ValueError, match="at least 1"):
        Deployment(asg_name="g", connection_budget=0)


def test_the_dashboards_connections_widget_shows_the_budget() -> None:
    body = dashboard(Deployment(asg_name="g", db_instance="productos-db", connection_budget=75))["DashboardBody"]
    (widget,) = [w for w in body["widgets"] if w["properties"].get("title") == "RDS: connections"]
    assert widget["properties"]["annotations"] == {"horizontal": [{"label": "budget", "value": 75}]}
