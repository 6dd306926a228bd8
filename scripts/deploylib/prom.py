"""Debian's Prometheus on loopback against the running stack, with our alert rules: what it scrapes and evaluates."""

from __future__ import annotations

import json
import shutil
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
DEAD_LETTERS_GROWING = "DispatcherDeadLettersGrowing"
DEAD_CAPABILITY = "sleep"  # a payload that is not a number of seconds, with no retry: one dead letter
BACKLOG_CAPABILITY = "deploy_check_backlog"  # no worker serves it: its tasks wait
BACKLOG = 123


class Prometheus:
    """One Prometheus server (a background process of the check) scraping the exporter and every worker."""

    def __init__(self, stack: Stack, background: Background) -> None:
        workdir = STATE / "prometheus"
        # A fresh TSDB each run: the last run's series (other ports, so other instances) stay in an instant query's
        # 5-minute lookback after a restart (no stale markers), and sum() would count them too (seen: 4000 echo
        # tasks for 2000 when two runs were 3 minutes apart).
        shutil.rmtree(workdir / "data", ignore_errors=True)
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
    """Every metric an alert rule or a dashboard panel uses is scraped from the exporter or the workers."""
    scraped = set(prom.get("/label/__name__/values"))
    alert_names = rules.metric_names(rules.alert_expressions())
    dashboard_names = rules.metric_names(rules.dashboard_expressions())
    missing = sorted((alert_names | dashboard_names) - scraped)
    if missing:
        raise CheckFailed(f"used by the alert rules or the dashboard, not scraped: {missing}")
    say(
        f"Prometheus: every metric the alert rules ({len(alert_names)}) and the dashboard ({len(dashboard_names)}) "
        f"use is scraped ({len(alert_names | dashboard_names)} names)"
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


def dead_letter(prom: Prometheus, dispatcher: Dispatcher) -> None:
    """One task dead-lettered by a worker: the exporter's gauge goes from 0 to 1 and the worker's counter to 1."""
    gauge = f'max(dispatcher_dead_letters{{capability="{DEAD_CAPABILITY}"}})'
    counter = f'sum(dispatcher_dead_letters_total{{capability="{DEAD_CAPABILITY}"}})'
    prom.wait_until(f"{gauge} to read 0", lambda: prom.scalar(gauge) == 0)
    dispatcher.submit(Task(capability=DEAD_CAPABILITY, payload="not a number", max_retries=0))
    prom.wait_until(f"{gauge} to read 1", lambda: prom.scalar(gauge) == 1)
    prom.wait_until(f"{counter} to read 1", lambda: prom.scalar(counter) == 1)
    say(f"Prometheus: one bad {DEAD_CAPABILITY} task dead-lettered: {gauge} 0 -> 1, {counter} = 1")


def alerts(prom: Prometheus, expected: set[tuple[str, str]]) -> None:
    """Every rule evaluates without error, and the active (pending or firing) alerts are exactly ``expected``
    (alert name, capability): the served capabilities, the exporter and Redis are fine."""

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
    prom.wait_until(f"the alerts {sorted(expected)}", lambda: expected <= {a[:2] for a in active()})
    stray = [a for a in active() if a[:2] not in expected]
    if stray:
        raise CheckFailed(f"alerts active for what is healthy: {stray}")
    states = ", ".join(f"{name}{{capability={cap}}} {state}" for name, cap, state in sorted(active()))
    say(f"Prometheus: {len(rules.alert_rules())} alert rules evaluated, no error; active: {states}")


def check(stack: Stack, background: Background, dispatcher: Dispatcher, echo_tasks: int) -> None:
    """The whole Prometheus step, after ``echo_tasks`` echo tasks ran: targets, the workers' outcome counter, the
    exporter's backlog, a dead letter, the metric names of the alerts and dashboard, Redis memory, and the alerts
    that real series make pending (tasks no worker serves, a new dead letter) and no other."""
    prom = Prometheus(stack, background)
    targets_up(prom)
    completed(prom, "echo", echo_tasks)
    dispatcher.submit_many(Task(capability=BACKLOG_CAPABILITY, payload=i) for i in range(BACKLOG))
    backlog(prom, BACKLOG_CAPABILITY, BACKLOG)
    dead_letter(prom, dispatcher)
    metrics_seen(prom)
    redis_memory(prom, stack.maxmemory_bytes)
    alerts(prom, {(NO_CONSUMER, BACKLOG_CAPABILITY), (DEAD_LETTERS_GROWING, DEAD_CAPABILITY)})
