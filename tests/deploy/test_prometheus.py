"""Prometheus: the rules and the scrape config pass promtool, the rule unit tests pass, and every metric an alert
or a dashboard panel uses is one the metrics module defines."""

from __future__ import annotations

import re
from pathlib import Path

from deploy.support import PROMETHEUS, load, run, tool
from deploylib.rules import alert_expressions, dashboard_expressions, metric_names
from prometheus_client import REGISTRY

PROMTOOL_WHY = "scripts/test installs it as root (Debian package prometheus)"
# The sample names a family serves, by type. A counter's family name is not one of them: prometheus-client names
# the family of dispatcher_dead_letters_total "dispatcher_dead_letters", which is the exporter's gauge.
SAMPLES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def defined_metric_names() -> set[str]:
    """Every sample name the metrics module defines: the families of the collectors it registers in the default
    registry, and of any other collector it holds (one served on a registry of its own, e.g. the exporter's)."""
    import dispatcher.observe.metrics as metrics

    families = list(REGISTRY.collect())
    for value in vars(metrics).values():
        describe = getattr(value, "describe", None)
        if callable(describe) and not isinstance(value, type) and value not in (REGISTRY,):
            families.extend(f for f in describe() if hasattr(f, "samples"))
    names: set[str] = set()
    for family in families:
        names.update(family.name + s for s in SAMPLES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    names |= metrics.exporter_metric_names()
    return {n for n in names if n.startswith("dispatcher_")}


def test_promtool_checks_the_rules() -> None:
    done = run([tool("promtool", PROMTOOL_WHY), "check", "rules", str(PROMETHEUS / "alerts.yaml")])
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rule_unit_tests_pass() -> None:
    """alerts_test.yaml: each alert fires on its synthetic series and stays silent on its near miss."""
    done = run([tool("promtool", PROMTOOL_WHY), "test", "rules", "alerts_test.yaml"], cwd=PROMETHEUS)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts_test.yaml").read_text()))
    alerts = {r["alert"] for g in load(PROMETHEUS / "alerts.yaml")["groups"] for r in g["rules"] if "alert" in r}
    assert tested == alerts, "every alert has unit tests"


def test_promtool_checks_the_scrape_config(tmp_path: Path) -> None:
    config = (PROMETHEUS / "prometheus.yml").read_text().replace("/etc/prometheus/", f"{PROMETHEUS}/")
    (tmp_path / "prometheus.yml").write_text(config)
    done = run([tool("promtool", PROMTOOL_WHY), "check", "config", str(tmp_path / "prometheus.yml")])
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_metric_used_is_defined() -> None:
    """The names come from the alert rules and dashboards; the definitions from dispatcher/observe/metrics.py."""
    used = metric_names(alert_expressions() + dashboard_expressions())
    assert len(used) >= 15
    missing = sorted(used - defined_metric_names())
    assert not missing, f"used by alerts or dashboards, not defined by dispatcher/observe/metrics.py: {missing}"
