"""Debian's Prometheus on loopback against the running stack, with our alert rules: what it scrapes and evaluates."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

from deploylib import rules
from deploylib.shell import STATE, Background, CheckFailed, say, wait_until
from deploylib.stack import WORKER_PORTS, Stack, free_ports
from dispatcher import Dispatcher, Task

SCRAPE_INTERVAL = "2s"
EVALUATION_INTERVAL = "2s"
DEADLINE_S = 60
NO_CONSUMER = "DispatcherTasksWaitingNoConsumer"
BACKLOG_CAPABILITY = "deploy_check_backlog"  # no worker serves it: its tasks wait
BACKLOG = 123


class Prometheus:
    """One Prometheus server (a background process of the check) scraping the exporter and every worker."""

    def __init__(self, stack: Stack, background: Background) -> None:
        workdir = STATE / "prometheus"
        workdir.mkdir(parents=True, exist_ok=True)
        (port,) = free_ports(1)
        self.targets = {
            "dispatcher-exporter": [stack.ports["EXPORTER_PORT"]],
            "dispatcher-workers": [stack.ports[name] for name in WORKER_PORTS.values()],
        }
        jobs = [
            {
                "job_name": job,
                "scrape_interval": SCRAPE_INTERVAL,
                "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}],
            }
            for job, ports in self.targets.items()
        ]
        config = {
            "global": {"evaluation_interval": EVALUATION_INTERVAL},
            "rule_files": [str(rules.ALERTS)],
            "scrape_configs": jobs,
        }
        (workdir / "prometheus.yml").write_text(json.dumps(config))
        argv = [
            "prometheus",
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        background.start("prometheus", argv, workdir / "prometheus.log")
        self.api = f"http://127.0.0.1:{port}/api/v1"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.api + path, timeout=5) as response:
            return json.loads(response.read())["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector of ``promql``: ``[{"metric": {...}, "value": [time, "text"]}, ...]``."""
        result: list[dict[str, Any]] = self.get("/query?query=" + urllib.parse.quote(promql))["result"]
        return result

    def scalar(self, promql: str) -> float | None:
        """The one value of ``promql``, None while it has none."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.get("/rules")["groups"] for rule in group["rules"]]

    def wait_until(self, what: str, predicate: Any) -> None:
        """Poll ``predicate`` (a Prometheus not answering yet counts as false) for at most DEADLINE_S."""

        def answered() -> bool:
            try:
                return bool(predicate())
            except OSError:
                return False

        wait_until(what, answered, DEADLINE_S)


def targets_up(prom: Prometheus) -> None:
    expected = sum(len(ports) for ports in prom.targets.values())

    def all_up() -> bool:
        active = prom.get("/targets")["activeTargets"]
        return len(active) == expected and all(t["health"] == "up" for t in active)

    prom.wait_until(f"all {expected} Prometheus targets up", all_up)
    say(f"Prometheus: all {expected} targets up (the exporter and the {expected - 1} workers)")


def metrics_seen(prom: Prometheus) -> None:
    """Every metric an alert rule uses is scraped; the dashboard's not seen yet are named (they need an event)."""
    scraped = set(prom.get("/label/__name__/values"))
    alert_names = rules.metric_names(rules.alert_expressions())
    missing = sorted(alert_names - scraped)
    if missing:
        raise CheckFailed(f"used by the alert rules, not scraped from the exporter or the workers: {missing}")
    dashboard_names = rules.metric_names(rules.dashboard_expressions())
    unseen = sorted(dashboard_names - scraped)
    say(
        f"Prometheus: every metric the alert rules use is scraped ({len(alert_names)}); "
        f"{len(dashboard_names) - len(unseen)} of the dashboard's {len(dashboard_names)}"
        + (f" (not seen, no such event in this run: {', '.join(unseen)})" if unseen else "")
    )


def completed(prom: Prometheus, capability: str, count: int) -> None:
    promql = f'sum(dispatcher_tasks_completed_total{{capability="{capability}",outcome="succeeded"}})'
    prom.wait_until(f"{promql} to read {count}", lambda: prom.scalar(promql) == count)
    say(f"Prometheus: {promql} = {count}, as run")


def backlog(prom: Prometheus, capability: str, count: int) -> None:
    promql = f'sum(dispatcher_tasks_waiting{{capability="{capability}"}})'
    prom.wait_until(f"the exporter's backlog query to read {count}", lambda: prom.scalar(promql) == count)
    say(f"Prometheus: {promql} = {count}, as submitted")


def redis_memory(prom: Prometheus, maxmemory_bytes: int) -> None:
    promql = "max(dispatcher_redis_maxmemory_bytes)"
    prom.wait_until(f"{promql} to read {maxmemory_bytes}", lambda: prom.scalar(promql) == maxmemory_bytes)
    used = prom.scalar("max(dispatcher_redis_used_memory_bytes)") or 0.0
    say(f"Prometheus: {promql} = {maxmemory_bytes} (the stack's maxmemory), used {used / 2**20:.1f} MiB")


def alerts(prom: Prometheus, capability: str) -> None:
    """Every rule evaluates without error; the no-consumer alert is pending or firing for ``capability`` (tasks
    wait, no worker serves it) and every active alert is about it (the served capabilities and Redis are fine)."""

    def active() -> list[tuple[str, str, str]]:
        return [
            (rule["name"], alert["labels"].get("capability", ""), alert["state"])
            for rule in prom.rules()
            if rule["type"] == "alerting"
            for alert in rule["alerts"]
        ]

    def evaluated() -> bool:
        found = prom.rules()
        bad = [(r["name"], r.get("lastError", "")) for r in found if r["health"] == "err"]
        if bad:
            raise CheckFailed(f"alert rules failing to evaluate: {bad}")
        return len(found) == len(rules.alert_rules()) and all(r["health"] == "ok" for r in found)

    prom.wait_until("every alert rule evaluated", evaluated)
    prom.wait_until(f"{NO_CONSUMER} for {capability}", lambda: (NO_CONSUMER, capability) in {a[:2] for a in active()})
    stray = [a for a in active() if a[1] != capability]
    if stray:
        raise CheckFailed(f"alerts active for what is healthy: {stray}")
    states = ", ".join(f"{name}{{capability={cap}}} {state}" for name, cap, state in active())
    say(f"Prometheus: {len(rules.alert_rules())} alert rules evaluated, no error; active: {states}")


def check(stack: Stack, background: Background, dispatcher: Dispatcher, echo_tasks: int) -> None:
    """The whole Prometheus step, after ``echo_tasks`` echo tasks ran: targets, the workers' outcome counter, the
    exporter's backlog, the metric names of the alerts and dashboard, Redis memory, and the alerts themselves."""
    prom = Prometheus(stack, background)
    targets_up(prom)
    completed(prom, "echo", echo_tasks)
    dispatcher.submit_many(Task(capability=BACKLOG_CAPABILITY, payload=i) for i in range(BACKLOG))
    backlog(prom, BACKLOG_CAPABILITY, BACKLOG)
    metrics_seen(prom)
    redis_memory(prom, stack.maxmemory_bytes)
    alerts(prom, BACKLOG_CAPABILITY)
