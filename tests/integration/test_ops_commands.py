"""The operator commands run as a user runs them (``main(argv)``) against real Redis and real worker processes:
``stats`` and ``workers`` after a scripted scenario, ``pause``/``resume`` on a live worker, ``pending``, and the
scaling advice on a backlog drained at a known rate."""

from __future__ import annotations

import json
import math
import os
import signal
from typing import Any

import pytest
import redis
from helpers import wait_exit, wait_until, worker_log

from dispatcher import Dispatcher, Settings, Task
from dispatcher.cli.exits import Exit
from dispatcher.cli.main import main
from dispatcher.store.codec import decode_worker
from dispatcher.store.keys import GROUP, KeySpace

DEADLINE_S = 60.0
TTL = ["--heartbeat-ttl-s", "1", "--block-ms", "200"]


@pytest.fixture
def cli(settings: Settings) -> list[str]:
    return ["--redis-url", settings.redis_url, "--prefix", settings.prefix]


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    assert main(list(argv)) == Exit.OK
    return json.loads(capsys.readouterr().out)


def stats_of(capsys: pytest.CaptureFixture[str], cli: list[str], *extra: str) -> dict[str, Any]:
    doc = run_json(capsys, "stats", "--json", *extra, *cli)
    return {c["name"]: c for c in doc["capabilities"]} | {"_doc": doc}


def pending_of(client: redis.Redis, stream: str) -> int:
    try:
        return int(client.xpending(stream, GROUP)["pending"])
    except redis.ResponseError:
        return 0


def beats(client: redis.Redis, prefix: str, consumer: str) -> float:
    raw = client.hget(KeySpace(prefix).workers, consumer)
    return decode_worker(raw).last_seen if raw else 0.0


def test_stats_and_workers_match_a_scripted_scenario(
    run_worker: Any,
    dispatcher: Dispatcher,
    client: redis.Redis,
    prefix: str,
    cli: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    ks = KeySpace(prefix)
    sleep = ks.capability("sleep")
    # Dead: a payload the sleep handler refuses, with no retry. Then a worker that will be SIGKILLed mid-task.
    doomed = run_worker("--capability", "sleep", "--name", "doomed", "--no-upkeep", "--concurrency", "1", *TTL)
    dead = dispatcher.submit("sleep", "not a number", max_retries=0)
    wait_until(lambda: client.xlen(sleep.dead) == 1, DEADLINE_S, message=f"a dead letter\n{worker_log(doomed)}")
    dispatcher.submit("sleep", 600)
    wait_until(lambda: pending_of(client, sleep.stream) == 1, DEADLINE_S, message="the doomed worker to hold a task")
    os.kill(doomed.pid, signal.SIGKILL)
    wait_exit(doomed)
    # Pause echo before anything serves it: its tasks wait although a live worker serves it.
    assert main(["pause", "echo", *cli]) == Exit.USAGE, "unknown until something was submitted to it or served it"
    dispatcher.submit_many([Task(capability="echo", payload=i) for i in range(3)])
    assert main(["pause", "echo", *cli]) == Exit.OK
    live = run_worker("--capability", "sleep", "--capability", "echo", "--name", "live", "--no-upkeep", *TTL)
    dispatcher.submit_many([Task(capability="sleep", payload=600) for _ in range(2)])
    dispatcher.submit("sleep", 1, delay_s=3600)  # delayed (no mover runs: --no-upkeep)
    wait_until(lambda: pending_of(client, sleep.stream) == 3, DEADLINE_S, message=f"two running\n{worker_log(live)}")
    wait_until(lambda: not client.exists(sleep.heartbeat("doomed")), DEADLINE_S, message="the heartbeat to lapse")

    caps = stats_of(capsys, cli)
    s, e, doc = caps["sleep"], caps["echo"], caps["_doc"]
    assert (s["waiting"], s["running"], s["delayed"], s["dead"], s["workers"]) == (0, 3, 1, 1, 1)
    assert s["stale_consumers"] == 1, "the killed worker's consumer: in the group, no heartbeat"
    assert s["oldest_running_s"] > 0 and s["paused"] is False
    assert (s["failed_1m"], s["completed_1m"]) == (1, 0)
    assert (e["waiting"], e["running"], e["workers"], e["paused"], e["stale_consumers"]) == (3, 0, 1, True, 0)
    assert e["oldest_waiting_s"] >= 0 and s["oldest_waiting_s"] is None
    assert (e["workers_needed"], e["workers_needed_basis"]) == (1, "no_rate")
    totals = doc["totals"]
    assert (totals["waiting"], totals["running"], totals["workers"], totals["paused"]) == (3, 3, 1, 1)
    assert doc["redis"]["maxmemory_policy"] and int(doc["redis"]["version"].split(".")[0]) >= 7

    capsys.readouterr()
    assert main(["stats", *cli]) == Exit.OK
    table = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line}
    assert rows["sleep"][1:7] == ["0", "3", "1", "1", "1", "1"]  # waiting running delayed dead workers stale
    assert rows["echo"][1:7] == ["3", "0", "0", "0", "1", "0"] and rows["echo"][-1] == "yes"
    assert "PAUSED: echo: workers do not read it (3 waiting)" in table

    workers = {w["consumer"]: w for w in run_json(capsys, "workers", "--json", *cli)}
    assert set(workers) == {"doomed", "live"}
    assert workers["live"]["alive"] and not workers["doomed"]["alive"]
    assert workers["live"]["capabilities"] == ["sleep", "echo"] and workers["live"]["inflight"] == 2
    assert workers["live"]["pid"] == live.pid and workers["doomed"]["pid"] == doomed.pid
    assert workers["live"]["circuits"] == {"sleep": "closed", "echo": "closed"}
    assert workers["live"]["version"] and workers["live"]["uptime_s"] >= 0 and workers["live"]["heartbeat_age_s"] >= 0

    running = run_json(capsys, "pending", "sleep", "--json", *cli)
    owners = sorted((r["owner"], r["owner_alive"]) for r in running)
    assert owners == [("doomed", False), ("live", True), ("live", True)]
    assert all(r["attempt"] == 1 and r["deliveries"] == 1 and r["task_id"] for r in running)
    assert run_json(capsys, "pending", "sleep", "--json", "--min-idle-s", "3600", *cli) == []
    assert dead.status() == "dead"

    capsys.readouterr()
    assert main(["stats", "--capability", "nope", *cli]) == Exit.USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dispatcher: error: unknown capability 'nope' (known: echo, sleep)")
    only = run_json(capsys, "stats", "--json", "--capability", "echo", *cli)
    assert [c["name"] for c in only["capabilities"]] == ["echo"]
    assert [w["consumer"] for w in only["workers"]] == ["live"]


def test_pause_stops_reading_at_the_next_heartbeat_and_resume_restarts_it(
    run_worker: Any,
    dispatcher: Dispatcher,
    client: redis.Redis,
    prefix: str,
    cli: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = KeySpace(prefix).capability("sleep")
    worker = run_worker("--capability", "sleep", "--name", "w", "--no-upkeep", "--heartbeat-ttl-s", "1.5")
    running = dispatcher.submit("sleep", 1.0)
    wait_until(lambda: pending_of(client, keys.stream) == 1, DEADLINE_S, message=f"running\n{worker_log(worker)}")
    before = beats(client, prefix, "w")
    assert main(["pause", "sleep", *cli]) == Exit.OK
    # Two beats later, the second was sent after the pause: it read the flag in its own pipeline.
    wait_until(lambda: beats(client, prefix, "w") > before, DEADLINE_S, message="a beat")
    first = beats(client, prefix, "w")
    wait_until(lambda: beats(client, prefix, "w") > first, DEADLINE_S, message="a second beat")
    wait_until(lambda: "paused capabilities now ['sleep']" in worker_log(worker), 5, message=worker_log(worker))
    assert running.result(timeout_s=DEADLINE_S) == 1.0, "a task already running finishes"
    handles = dispatcher.submit_many([Task(capability="sleep", payload=0) for _ in range(5)])  # still accepted
    second = beats(client, prefix, "w")
    wait_until(lambda: beats(client, prefix, "w") > second, DEADLINE_S, message="a third beat")
    third = beats(client, prefix, "w")
    wait_until(lambda: beats(client, prefix, "w") > third, DEADLINE_S, message="a fourth beat")
    assert (client.xlen(keys.stream), pending_of(client, keys.stream)) == (5, 0), "nothing read while paused"
    caps = stats_of(capsys, cli)
    assert (caps["sleep"]["paused"], caps["sleep"]["waiting"], caps["sleep"]["workers"]) == (True, 5, 1)
    assert main(["pause", "sleep", *cli]) == Exit.OK
    assert "sleep was already paused" in capsys.readouterr().out

    assert main(["resume", "sleep", *cli]) == Exit.OK
    assert [h.result(timeout_s=DEADLINE_S) for h in handles] == [0] * 5
    assert not client.exists(keys.paused)
    assert stats_of(capsys, cli)["sleep"]["paused"] is False


def test_pause_survives_a_worker_restart(
    run_worker: Any, dispatcher: Dispatcher, client: redis.Redis, prefix: str, cli: list[str]
) -> None:
    keys = KeySpace(prefix).capability("echo")
    handle = dispatcher.submit("echo", "x")
    assert main(["pause", "echo", *cli]) == Exit.OK
    worker = run_worker("--capability", "echo", "--name", "w", "--no-upkeep", *TTL)
    wait_until(lambda: beats(client, prefix, "w") > 0, DEADLINE_S, message=f"registered\n{worker_log(worker)}")
    first = beats(client, prefix, "w")
    wait_until(lambda: beats(client, prefix, "w") > first, DEADLINE_S, message="a second beat")
    assert client.xlen(keys.stream) == 1 and pending_of(client, keys.stream) == 0, "its first beat saw the flag"
    assert main(["resume", "echo", *cli]) == Exit.OK
    assert handle.result(timeout_s=DEADLINE_S) == "x"


def test_scaling_advice_on_a_backlog_with_a_known_rate(
    run_worker: Any, dispatcher: Dispatcher, client: redis.Redis, cli: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # One worker, 2 slots, 0.2 s tasks: at most 10 tasks/s; a backlog of 200 takes 20 s at best.
    task_s, concurrency = 0.2, 2
    worker = run_worker("--capability", "sleep", "--no-upkeep", "--concurrency", str(concurrency), *TTL)
    dispatcher.submit_many([Task(capability="sleep", payload=task_s) for _ in range(200)])
    c = wait_until(
        lambda: (s := stats_of(capsys, cli, "--target-age-s", "5")["sleep"])["completed_1m"] >= 20 and s,
        DEADLINE_S,
        interval_s=0.2,
        message=f"throughput\n{worker_log(worker)}",
    )
    rate = c["completed_1m"] / c["throughput_window_s"]
    # In the window's T seconds 2 slots of 0.2 s tasks complete at most 2 * (T / 0.2 + 1) tasks (the +1: the first
    # round may complete right as the window's first bucket begins).
    assert 0 < c["completed_1m"] <= concurrency * (c["throughput_window_s"] / (task_s * 0.99) + 1)
    assert c["completed_1m"] <= 200 - c["waiting"] - c["running"]
    assert c["drain_eta_s"] == pytest.approx(c["waiting"] / rate, rel=1e-3)
    backlog = c["waiting"] + c["running"]
    assert c["workers_needed_basis"] == "measured"
    assert c["workers_needed"] == math.ceil(backlog / (rate / c["workers"] * 5) - 1e-9)
    # The backlog needs several such workers to drain within 5 s: at 10 tasks/s per worker, at least backlog/50.
    assert c["workers_needed"] >= math.ceil(backlog / (concurrency / task_s * 5))
    assert c["workers_needed"] > 1


def test_pause_of_an_invalid_name_is_one_line(cli: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pause", "Bad Name", *cli]) == Exit.USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dispatcher: error: invalid capability 'Bad Name'")
    assert main(["pending", "nothing-here", *cli]) == Exit.USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown capability 'nothing-here'" in err[0]
