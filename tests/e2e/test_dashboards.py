"""The Grafana dashboard is the generator's output, and every query it makes names a metric the service exposes
on /metrics; the CloudWatch dashboard's service row has the same panels."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from productos.domain.dashboards import PANELS
from productos.infra.aws.resources import Deployment, dashboard
from productos.observability.grafana import grafana_dashboard

COMMITTED = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "productos.json"
#: Identifiers in PromQL that are functions, keywords or Grafana variables, not metrics.
_NOT_METRICS = {"sum", "by", "le", "rate", "histogram_quantile"}


def _metric_names(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    return {name for name in re.findall(r"[a-z_][a-z0-9_]*", without_ranges) if name not in _NOT_METRICS}


def test_the_committed_grafana_dashboard_is_the_generators_output() -> None:
    assert json.loads(COMMITTED.read_text()) == grafana_dashboard()


async def test_every_grafana_query_names_a_metric_the_service_exposes(client: httpx.AsyncClient) -> None:
    assert (await client.post("/productos", json={"nombre": "Mesa", "precio": 10})).status_code == 201
    assert (await client.get("/productos")).status_code == 200
    exposed = {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in (await client.get("/metrics")).text.splitlines()
        if line and not line.startswith("#")
    }
    queried = {
        name for panel in grafana_dashboard()["panels"] for t in panel["targets"] for name in _metric_names(t["expr"])
    }
    assert queried, "no metric found in the dashboard's queries"
    assert queried <= exposed, f"queried but not exposed: {sorted(queried - exposed)}"


def test_cloudwatch_and_grafana_show_the_same_panels() -> None:
    body = dashboard(Deployment(asg_name="g", namespace="Productos", region="us-east-1"))["DashboardBody"]
    cloudwatch_titles = [w["properties"]["title"] for w in body["widgets"] if w["type"] == "metric"]
    grafana_titles = [panel["title"] for panel in grafana_dashboard()["panels"]]
    assert grafana_titles == [panel.title for panel in PANELS]
    assert cloudwatch_titles[-len(PANELS) :] == grafana_titles
