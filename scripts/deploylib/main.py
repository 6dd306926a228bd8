"""The steps of scripts/deploy-check, in order; each says what it found, the first that fails ends the run."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from deploylib import image, prom
from deploylib.shell import STATE, Background, CheckFailed, fail, run, say, wait_until
from deploylib.stack import SERVICES, WORKER_PORTS, Stack
from dispatcher import Dispatcher, Settings, Task

ECHO_TASKS = 2000
SLEEP_TASKS = 40  # more than the 32 slots of the two sleep workers: both are full when one is killed
SLEEP_S = 3
STOP_TASKS = 10
STOP_SLEEP_S = 5
STOP_GRACE_S = 35  # stop_grace_period in compose.yaml
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


def probes(stack: Stack) -> None:
    """/livez and /readyz (what the Kubernetes probes ask) answer 200 on every worker and the exporter."""
    ports = {service: stack.ports[name] for service, name in WORKER_PORTS.items()}
    ports["exporter"] = stack.ports["EXPORTER_PORT"]
    for service, port in ports.items():
        for path in ("/livez", "/readyz"):
            url = f"http://127.0.0.1:{port}{path}"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    status = response.status
            except OSError as e:  # an HTTPError (503) is one
                raise CheckFailed(f"{service}: GET {url}: {e}") from None
            if status != 200:
                raise CheckFailed(f"{service}: GET {url} answered {status}")
    say(f"/livez and /readyz answer 200 on {', '.join(ports)}")


def steps(stack: Stack, background: Background) -> None:
    """Every step in order; the first that fails raises CheckFailed."""
    stack.up(SERVICES)
    stack.wait_healthy(SERVICES)
    probes(stack)
    dispatcher = Dispatcher(Settings(redis_url=stack.redis_url))
    try:
        echo_through(dispatcher)
        prom.check(stack, background, dispatcher, ECHO_TASKS)
        kill_a_worker(stack, dispatcher)
        stop_a_worker(stack, dispatcher)
    finally:
        dispatcher.close()


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
        steps(stack, background)
    except (CheckFailed, subprocess.TimeoutExpired) as e:
        return fail(str(e))
    except FileNotFoundError as e:  # a tool missing from PATH
        return fail(f"cannot run {e.filename}: not installed (it needs docker, dockerd, debootstrap and prometheus)")
    finally:
        if stack is not None:
            stack.down()
        background.stop_all()
    say("PASS")
    return 0
