"""The steps of scripts/deploy-check, in order; each says what it found, the first that fails ends the run."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from deploylib import image
from deploylib.shell import ROOT, STATE, Background, CheckFailed, fail, run, say, wait_until
from deploylib.stack import SERVICES, WORKERS, Stack, free_ports
from dispatcher import Dispatcher, Settings, Task

ECHO_TASKS = 2000
SLEEP_TASKS = 40  # more than the 32 slots of the two sleep workers: both are full when one is killed
SLEEP_S = 3
STOP_TASKS = 10
STOP_SLEEP_S = 5
STOP_GRACE_S = 35  # stop_grace_period in compose.yaml
BACKLOG = 123
RESULT_DEADLINE_S = 180


def docker_up(background: Background) -> None:
    """Use a running dockerd, or start one (stopped at the end by its PID)."""
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode == 0:
        say("dockerd: already running")
        return
    background.start("dockerd", ["dockerd"], STATE / "dockerd.log")
    wait_until(
        "dockerd", lambda: subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0, 60
    )


def has_operations() -> bool:
    """Whether the image has `dispatcher exporter` and `dispatcher healthcheck` (the operations issue)."""
    argv = ["docker", "run", "--rm", "--network", "host", image.IMAGE, "dispatcher", "healthcheck", "--help"]
    return subprocess.run(argv, capture_output=True, timeout=60, check=False).returncode == 0


def stats(stack: Stack) -> dict[str, Any]:
    exe = Path(sys.executable).parent / "dispatcher"
    found: dict[str, Any] = json.loads(run([str(exe), "stats", "--json", "--redis-url", stack.redis_url], timeout_s=30))
    return found


def row(stack: Stack, capability: str) -> dict[str, Any]:
    return next((r for r in stats(stack)["capabilities"] if r["name"] == capability), {"running": 0, "workers": 0})


def read_all(handles: list[Any], deadline_s: float = RESULT_DEADLINE_S) -> list[Any]:
    end = time.monotonic() + deadline_s
    return [h.result(timeout_s=max(1.0, end - time.monotonic())) for h in handles]


def echo_through(dispatcher: Dispatcher) -> None:
    started = time.monotonic()
    handles = dispatcher.submit_many(Task(capability="echo", payload={"i": i}) for i in range(ECHO_TASKS))
    results = read_all(handles)
    if results != [{"i": i} for i in range(ECHO_TASKS)]:
        raise CheckFailed("echo results differ from their payloads")
    say(f"{ECHO_TASKS} echo tasks submitted from the host, every result read ({time.monotonic() - started:.1f} s)")


def kill_a_worker(stack: Stack, dispatcher: Dispatcher) -> None:
    handles = dispatcher.submit_many(Task(capability="sleep", payload=SLEEP_S) for _ in range(SLEEP_TASKS))
    wait_until("both sleep workers full", lambda: row(stack, "sleep")["running"] >= 32, 60, every_s=0.2)
    victim = stack.container("worker-sleep-2")
    run(["docker", "kill", "--signal", "KILL", victim])
    killed = time.monotonic()
    say(f"kill -9 worker-sleep-2 ({victim[:12]}) with 16 of its tasks running")
    results = read_all(handles)
    if results != [float(SLEEP_S)] * SLEEP_TASKS:
        raise CheckFailed(f"sleep results: {results}")
    took_s = time.monotonic() - killed
    say(f"all {SLEEP_TASKS} sleep tasks completed, the killed worker's elsewhere ({took_s:.1f} s after the kill)")


def stop_a_worker(stack: Stack, dispatcher: Dispatcher) -> None:
    stack.compose("stop", "worker-sleep-2")
    handles = dispatcher.submit_many(Task(capability="sleep", payload=STOP_SLEEP_S) for _ in range(STOP_TASKS))
    wait_until("the stop tasks running", lambda: row(stack, "sleep")["running"] >= STOP_TASKS, 60, every_s=0.2)
    started = time.monotonic()
    stack.compose("stop", "--timeout", str(STOP_GRACE_S), "worker-sleep", timeout_s=STOP_GRACE_S + 60)
    took_s = time.monotonic() - started
    exit_code = stack.state("worker-sleep").get("ExitCode")
    running = f"{STOP_TASKS} x {STOP_SLEEP_S} s tasks running"
    say(f"docker-compose stop worker-sleep with {running}: exit {exit_code} after {took_s:.1f} s")
    if exit_code != 0 or took_s >= STOP_GRACE_S:
        raise CheckFailed(f"worker-sleep exited {exit_code} after {took_s:.1f} s (SIGTERM did not reach it in time)")
    results = read_all(handles, deadline_s=30)
    if results != [float(STOP_SLEEP_S)] * STOP_TASKS:
        raise CheckFailed(f"stop results: {results}")
    say(f"all {STOP_TASKS} tasks that were running at the stop have their results: none lost")


def prometheus(stack: Stack, background: Background, dispatcher: Dispatcher) -> None:
    """Debian's Prometheus on loopback scrapes the exporter and the workers, with our alert rules."""
    workdir = STATE / "prometheus"
    workdir.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    targets = {
        "dispatcher-exporter": [stack.ports["EXPORTER_PORT"]],
        "dispatcher-workers": [stack.ports["ECHO_METRICS_PORT"]],
    }
    jobs = [
        {"job_name": job, "scrape_interval": "2s", "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ps]}]}
        for job, ps in targets.items()
    ]
    config = {
        "global": {"evaluation_interval": "5s"},
        "rule_files": [str(ROOT / "compose/prometheus/alerts.yaml")],
        "scrape_configs": jobs,
    }
    (workdir / "prometheus.yml").write_text(json.dumps(config))
    background.start(
        "prometheus",
        [
            "prometheus",
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        workdir / "prometheus.log",
    )
    api = f"http://127.0.0.1:{port}/api/v1"

    def get(path: str) -> Any:
        with urllib.request.urlopen(api + path, timeout=5) as response:
            return json.loads(response.read())["data"]

    def all_up() -> bool:
        try:
            active = get("/targets")["activeTargets"]
        except OSError:
            return False
        return len(active) == 2 and all(t["health"] == "up" for t in active)

    wait_until("every Prometheus target up", all_up, 60)
    say("Prometheus: every target up (exporter, worker-echo)")
    dispatcher.submit_many(Task(capability="deploy_check_backlog", payload=i) for i in range(BACKLOG))
    query = "/query?query=" + urllib.parse.quote('sum(dispatcher_tasks_waiting{capability="deploy_check_backlog"})')

    def backlog_seen() -> bool:
        result = get(query)["result"]
        return bool(result) and float(result[0]["value"][1]) == BACKLOG

    wait_until(f"the exporter's backlog query to read {BACKLOG}", backlog_seen, 30)
    say(f'Prometheus: sum(dispatcher_tasks_waiting{{capability="deploy_check_backlog"}}) = {BACKLOG}, as submitted')


def steps(stack: Stack, background: Background) -> list[str]:
    """Every step in order; the names of those that could not run."""
    skipped: list[str] = []
    operations = has_operations()
    services = SERVICES if operations else [s for s in SERVICES if s != "exporter"]
    stack.up(services)
    if operations:
        stack.wait_healthy(services)
    else:
        skipped += ["healthchecks of workers and exporter", "exporter", "Prometheus"]
        say("SKIPPED: the image has no `dispatcher healthcheck`/`exporter` (the operations issue is not in this tree)")
        stack.wait_healthy(["redis"])
        wait_until("3 workers alive", lambda: stats(stack)["totals"]["workers"] >= len(WORKERS), 120)
        say(f"{len(WORKERS)} workers alive (dispatcher stats)")
    dispatcher = Dispatcher(Settings(redis_url=stack.redis_url))
    try:
        echo_through(dispatcher)
        kill_a_worker(stack, dispatcher)
        stop_a_worker(stack, dispatcher)
        if operations:
            prometheus(stack, background, dispatcher)
    finally:
        dispatcher.close()
    return skipped


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="deploy-check", description=__doc__).parse_args(argv)
    STATE.mkdir(exist_ok=True)
    background = Background()
    stack: Stack | None = None
    try:
        docker_up(background)
        image.base_image()
        image.wheelhouse()
        image.our_image()
        stack = Stack()
        skipped = steps(stack, background)
    except (CheckFailed, subprocess.TimeoutExpired) as e:
        return fail(str(e))
    finally:
        if stack is not None:
            stack.down()
        background.stop_all()
    if skipped:
        say(f"INCOMPLETE: not run: {'; '.join(skipped)}")
        return 2
    say("PASS")
    return 0
