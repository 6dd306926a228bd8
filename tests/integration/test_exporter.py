"""``dispatcher exporter`` run as a user runs it (a process of its own): its gauges equal what a scripted scenario
left in Redis, it answers ``dispatcher_redis_up 0`` while Redis is down or hangs, and it exits 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps.faulty import LEDGER_ENV, Ledger
from conftest import RedisServer, WorkerRunner
from helpers import free_tcp_port, scrape, wait_exit, wait_until, worker_log
from prometheus_client.metrics_core import Metric

from dispatcher import Dispatcher, Settings, TaskDead

DEADLINE_S = 30.0
TIMERS = ("--heartbeat-ttl-s", "2", "--reaper-interval-s", "0.5", "--block-ms", "200")
CLI = "import sys; from dispatcher.cli.main import main; sys.exit(main())"


class Exporters:
    """Starts ``dispatcher exporter`` processes; stops the live ones by PID at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def __call__(self, url: str, prefix: str, *args: str, env: dict[str, str] | None = None) -> tuple[Any, int]:
        port = free_tcp_port()
        argv = [sys.executable, "-c", CLI, "exporter", "--redis-url", url, "--prefix", prefix, "--port", str(port)]
        n = len(self.procs)
        out, err = self.tmp_path / f"exporter-{n}.out", self.tmp_path / f"exporter-{n}.err"
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen([*argv, *args], stdout=o, stderr=e, env={**os.environ, **(env or {})})
        proc.stdout_path, proc.stderr_path = out, err  # type: ignore[attr-defined]
        self.procs.append(proc)

        def serving() -> dict[str, Metric] | None:
            assert proc.poll() is None, worker_log(proc)
            return scrape(port)

        wait_until(serving, DEADLINE_S, message="the exporter to serve")
        return proc, port

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture
def exporters(tmp_path: Path) -> Iterator[Exporters]:
    runner = Exporters(tmp_path)
    try:
        yield runner
    finally:
        runner.stop_all()


def by_capability(families: dict[str, Metric], name: str) -> dict[str, float]:
    return {s.labels["capability"]: s.value for s in families[name].samples}


def value(families: dict[str, Metric], name: str) -> float:
    (sample,) = families[name].samples
    return float(sample.value)


def test_gauges_equal_the_state_a_scenario_left(
    redis_server: RedisServer,
    run_worker: WorkerRunner,
    exporters: Exporters,
    dispatcher: Dispatcher,
    ledger: Ledger,
    prefix: str,
) -> None:
    # waiting: 5 tasks of a capability no worker serves; delayed: 2 for an hour; dead: 3 rejected; running: 1 held
    # by the only live worker (which also serves faulty.reject).
    for i in range(5):
        dispatcher.submit("faulty.unserved", {"i": i})
    for i in range(2):
        dispatcher.submit("faulty.ledger", {"i": i}, delay_s=3600)
    worker = run_worker(
        "--capability", "faulty.ledger", "--capability", "faulty.reject", *TIMERS,
        app="apps.faulty", env={LEDGER_ENV: ledger.path},
    )  # fmt: skip
    rejected = [dispatcher.submit("faulty.reject", {}) for _ in range(3)]
    for handle in rejected:
        with pytest.raises(TaskDead):
            handle.result(timeout_s=DEADLINE_S)
    held = dispatcher.submit("faulty.ledger", {"sleep_s": 120})
    wait_until(lambda: ledger.count("start", held.id) == 1, DEADLINE_S, message="the held task to start")

    _, port = exporters(redis_server.url, prefix)
    families = scrape(port)
    assert families is not None
    assert value(families, "dispatcher_redis_up") == 1
    assert by_capability(families, "dispatcher_tasks_waiting") == {
        "faulty.unserved": 5, "faulty.ledger": 0, "faulty.reject": 0
    }  # fmt: skip
    assert by_capability(families, "dispatcher_tasks_delayed") == {
        "faulty.unserved": 0, "faulty.ledger": 2, "faulty.reject": 0
    }  # fmt: skip
    assert by_capability(families, "dispatcher_dead_letters") == {
        "faulty.unserved": 0, "faulty.ledger": 0, "faulty.reject": 3
    }  # fmt: skip
    assert by_capability(families, "dispatcher_tasks_running") == {
        "faulty.unserved": 0, "faulty.ledger": 1, "faulty.reject": 0
    }  # fmt: skip
    consumers = {(s.labels["capability"], s.labels["state"]): s.value for s in families["dispatcher_consumers"].samples}
    alive = {c: v for (c, state), v in consumers.items() if state == "alive"}
    stale = {c: v for (c, state), v in consumers.items() if state == "stale"}
    assert alive == {"faulty.unserved": 0, "faulty.ledger": 1, "faulty.reject": 1}
    assert stale == {"faulty.unserved": 0, "faulty.ledger": 0, "faulty.reject": 0}
    assert by_capability(families, "dispatcher_paused") == {
        "faulty.unserved": 0,
        "faulty.ledger": 0,
        "faulty.reject": 0,
    }
    running_ages = by_capability(families, "dispatcher_oldest_running_task_age_seconds")
    assert running_ages["faulty.ledger"] >= 0 and running_ages["faulty.unserved"] == 0
    # No worker serves faulty.unserved and nothing completed there: the advice is at least one worker.
    assert by_capability(families, "dispatcher_workers_needed")["faulty.unserved"] >= 1
    assert by_capability(families, "dispatcher_tasks_failed_1m")["faulty.reject"] == 3
    assert value(families, "dispatcher_redis_used_memory_bytes") > 0
    assert value(families, "dispatcher_workers") == 1
    ages = by_capability(families, "dispatcher_oldest_waiting_task_age_seconds")
    assert ages["faulty.unserved"] > 0 and ages["faulty.ledger"] == 0
    assert value(families, "dispatcher_exporter_collect_seconds") > 0
    assert families["dispatcher_tasks_waiting"].type == "gauge"
    # sum() over the exporter never multiplies across workers: a second worker changes no queue gauge.
    run_worker("--capability", "faulty.reject", *TIMERS, app="apps.faulty")
    wait_until(lambda: value(scrape(port) or {}, "dispatcher_workers") == 2, DEADLINE_S, message="two workers")
    again = scrape(port)
    assert again is not None
    assert sum(by_capability(again, "dispatcher_dead_letters").values()) == 3
    assert worker.poll() is None


def test_redis_down_or_hung_answers_redis_up_0_and_sigterm_exits_0(
    exporters: Exporters, prefix: str, tmp_path: Path
) -> None:
    with RedisServer() as server:
        with Dispatcher(Settings.build(redis_url=server.url, prefix=prefix)) as d:
            d.submit("faulty.unserved", {})
        proc, port = exporters(server.url, prefix, "--scrape-timeout-s", "0.5", "--log-format", "json")
        up = scrape(port)
        assert up is not None and value(up, "dispatcher_redis_up") == 1
        assert by_capability(up, "dispatcher_tasks_waiting") == {"faulty.unserved": 1}

        os.kill(server.pid, signal.SIGSTOP)  # hangs: every command of the scrape would wait for ever
        try:
            hung = scrape(port)  # urllib's own timeout (10 s) is far beyond the scrape's 0.5 s
            assert hung is not None and value(hung, "dispatcher_redis_up") == 0
            assert "dispatcher_tasks_waiting" not in hung  # absent, not a stale or made-up 0
            assert value(hung, "dispatcher_exporter_collect_seconds") >= 0.5  # it waited its timeout, no more
        finally:
            os.kill(server.pid, signal.SIGCONT)
        back = wait_until(lambda: (f := scrape(port)) and value(f, "dispatcher_redis_up") == 1 and f, DEADLINE_S)
        assert by_capability(back, "dispatcher_tasks_waiting") == {"faulty.unserved": 1}

        server.kill()
        down = scrape(port)
        assert down is not None and value(down, "dispatcher_redis_up") == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as r:
            assert r.status == 200  # the exporter's job is to report that Redis is down

    os.kill(proc.pid, signal.SIGTERM)
    assert wait_exit(proc, DEADLINE_S) == 0
    # The outage was logged once, as one JSON object per line (--log-format json); nothing else on stderr.
    lines = proc.stderr_path.read_text().splitlines()  # type: ignore[attr-defined]
    records = [json.loads(line) for line in lines]
    assert records and all({"time", "level", "logger", "event"} <= r.keys() for r in records), lines
    assert [r["event"].split(" error=")[0] for r in records if "unavailable" in r["event"]] == [
        "exporter: Redis unavailable, serving dispatcher_redis_up 0",
        "exporter: Redis unavailable, serving dispatcher_redis_up 0",
    ]
