"""The metric names the alert rules and the Grafana dashboards use, read from their files (one reading of them, for
the offline test that the metrics module defines each and for deploy-check's look at what Prometheus scraped)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
ALERTS = COMPOSE / "prometheus" / "alerts.yaml"
METRIC = re.compile(r"\bdispatcher_[a-z0-9_]+\b")  # recording rules are named dispatcher:..., not matched


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of alerts.yaml (alerts and recording rules), in order."""
    groups: list[dict[str, Any]] = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_expressions() -> list[str]:
    return [rule["expr"] for rule in alert_rules()]


def dashboard_expressions() -> list[str]:
    """The query of every panel target and every template variable of the dashboards under compose/grafana."""
    exprs: list[str] = []
    for path in sorted((COMPOSE / "grafana").rglob("*.json")):
        dashboard: dict[str, Any] = json.loads(path.read_text())
        exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
        exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    return exprs


def metric_names(exprs: list[str]) -> set[str]:
    """The ``dispatcher_*`` sample names the expressions use."""
    return {name for expr in exprs for name in METRIC.findall(expr)}
