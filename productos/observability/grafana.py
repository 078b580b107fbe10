"""A Grafana dashboard for Prometheus users, rendered from the same panel definitions as the CloudWatch one
(``productos.domain.dashboards``).

``python -m productos.observability.grafana > dashboard.json``, then import it in Grafana (Dashboards → New →
Import) and pick the Prometheus data source that scrapes the instances' ``/metrics``. The committed copy is
``deploy/grafana/productos.json``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from productos.domain.dashboards import PANELS, Panel

__all__ = ["grafana_dashboard"]

_WIDTH, _HEIGHT, _PER_ROW = 8, 8, 3
_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _panel(panel: Panel, index: int) -> dict[str, Any]:
    thresholds: dict[str, Any] = {"mode": "absolute", "steps": [{"color": "green", "value": None}]}
    if panel.threshold is not None:
        thresholds["steps"].append({"color": "red", "value": panel.threshold})
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": panel.title,
        "datasource": _DATASOURCE,
        "gridPos": {
            "x": (index % _PER_ROW) * _WIDTH,
            "y": (index // _PER_ROW) * _HEIGHT,
            "w": _WIDTH,
            "h": _HEIGHT,
        },
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "thresholds": thresholds,
                "custom": {"thresholdsStyle": {"mode": "line" if panel.threshold is not None else "off"}},
            },
            "overrides": [],
        },
        "targets": [
            {"refId": chr(ord("A") + n), "expr": expr, "legendFormat": legend, "datasource": _DATASOURCE}
            for n, (legend, expr) in enumerate(panel.prometheus)
        ],
    }


def grafana_dashboard(title: str = "productos") -> dict[str, Any]:
    """The dashboard's JSON model (Grafana 10+), with a data-source variable to pick the Prometheus to read."""
    return {
        "title": title,
        "uid": "productos-service",
        "tags": ["productos"],
        "timezone": "utc",
        "schemaVersion": 39,
        "time": {"from": "now-3h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "panels": [_panel(panel, index) for index, panel in enumerate(PANELS)],
    }


if __name__ == "__main__":
    json.dump(grafana_dashboard(), sys.stdout, indent=2)
    sys.stdout.write("\n")
