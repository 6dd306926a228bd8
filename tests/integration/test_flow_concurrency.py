"""Per-key concurrency caps end to end, with real workers and the admitter: never more than the cap of one key run
at once (counted inside the handlers), keys at their cap do not hold up other keys, permits come back when tasks
settle, and bad input at submit is refused with nothing written."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from apps.faulty import LEDGER_ENV, Ledger
from conftest import WorkerRunner
from helpers import keyspace, wait_until, workers_in_threads

from dispatcher import Dispatcher, InvalidTask, KeySpace, Settings, Task
from dispatcher.fleet import ratelimits
from dispatcher.store import flow
from workers import Registry

CAP = 2
KEYS = 10
PER_KEY = 6


class Running:
    """Tasks running now per key, and the most seen at once, counted inside the handlers."""

    def __init__(self) -> None:
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.done = 0
        self.lock = threading.Lock()

    def handler(self, task: Task) -> None:
        key = str(task.concurrency_key)
        with self.lock:
            self.now[key] += 1
            self.most[key] = max(self.most[key], self.now[key])
        time.sleep(0.05)
        with self.lock:
            self.now[key] -= 1
            self.done += 1


@pytest.fixture
def running(settings: Settings) -> Iterator[Running]:
    got = Running()
    registry = Registry()
    registry.register("repo", got.handler)
    with workers_in_threads(registry, ["repo"], settings, count=2, concurrency=16):
        yield got


def test_never_more_than_the_cap_of_one_key_at_once(
    dispatcher: Dispatcher, client: redis.Redis, settings: Settings, running: Running
) -> None:
    ratelimits.set_concurrency(dispatcher.gateway, dispatcher.core.keyspace, "repo", CAP)
    keys = [f"repo-{k}" for k in range(KEYS)]
    tasks = [Task(capability="repo", concurrency_key=key, payload=i) for i in range(PER_KEY) for key in keys]
    t0 = time.monotonic()
    dispatcher.submit_many(tasks)
    wait_until(lambda: running.done == len(tasks), 60, message="every keyed task ran")
    elapsed_s, most = time.monotonic() - t0, max(running.most.values())
    print(f"\n{len(tasks)} tasks over {KEYS} keys in {elapsed_s:.2f} s; most at once per key: {most}")
    assert most <= CAP
    assert min(running.most.values()) == CAP, "a key never reached its cap: slots idled while it had work"
    wait_until(lambda: client.hlen(f"{settings.prefix}:{{repo}}:tasks") == 0, 10, message="the index emptied")
    # Permits whose tasks settled are removed at the admitter's next look at their key; none is held now.
    holders = dispatcher.gateway.run(flow.holders(dispatcher.core.keys("repo"), keys))
    assert set(holders.values()) == {0}
    assert not [k for k in keyspace(client, settings.prefix) if ":permits:" in k]


def test_a_key_at_its_cap_does_not_hold_up_other_keys(
    dispatcher: Dispatcher, settings: Settings, running: Running
) -> None:
    ratelimits.set_concurrency(dispatcher.gateway, dispatcher.core.keyspace, "repo", 1)
    hot = [Task(capability="repo", concurrency_key="hot", payload=i) for i in range(20)]  # 20 x 50 ms in a row
    cold = [Task(capability="repo", concurrency_key=f"cold-{i}", payload=i) for i in range(10)]
    dispatcher.submit_many([*hot, *cold])  # the hot key's tasks first: ahead in rank
    wait_until(lambda: running.most["cold-9"] == 1, 10, message="the cold keys started past the hot key's queue")
    assert running.done < 20, "the cold keys waited for the hot key's whole queue"


def test_a_concurrency_key_without_a_cap_or_too_long_is_refused(
    dispatcher: Dispatcher, client: redis.Redis, settings: Settings
) -> None:
    with pytest.raises(InvalidTask, match="has no per-key concurrency cap"):
        dispatcher.submit("nocap", 1, concurrency_key="k")
    with pytest.raises(InvalidTask, match=r"concurrency_key.*must be 1-128 printable"):
        dispatcher.submit("nocap", 1, concurrency_key="x" * 129)
    with pytest.raises(InvalidTask, match=r"concurrency_key.*must be 1-128 printable"):
        dispatcher.submit("nocap", 1, concurrency_key="a b")
    assert not [k for k in keyspace(client, settings.prefix) if "{nocap}" in k]


def test_kill_9_of_a_worker_holding_permits_loses_nothing_and_leaks_nothing(
    client: redis.Redis, dispatcher: Dispatcher, run_worker: WorkerRunner, ledger: Ledger, prefix: str
) -> None:
    """Each key's first task hangs on the victim, holding its key's permit (cap 1) and a rate limit's units; the
    victim is killed; the reaper gives its tasks back and the rescuer runs every task once more to the end."""
    ratelimits.set_concurrency(dispatcher.gateway, dispatcher.core.keyspace, "faulty.ledger", 1)
    ratelimits.define(dispatcher.gateway, dispatcher.core.keyspace, "provider", 6000.0, 100)
    timers = ("--heartbeat-ttl-s", "2", "--reaper-interval-s", "0.5", "--block-ms", "200")
    env = {LEDGER_ENV: ledger.path}
    victim = run_worker("-c", "faulty.ledger", "--concurrency", "8", *timers, app="apps.faulty", env=env)
    wait_until(lambda: client.hlen(KeySpace(prefix).workers) == 1, 30, message="the victim registered")
    keys = [f"k{i}" for i in range(4)]
    tasks = [
        Task(
            capability="faulty.ledger",
            payload={"first_sleep_s": 60, "tag": f"{key}-{n}"} if n == 0 else {"tag": f"{key}-{n}"},
            concurrency_key=key,
            rate_limits={"provider": 1},
        )
        for key in keys
        for n in range(2)
    ]
    handles = dispatcher.submit_many(tasks)
    first = [h.id for h, t in zip(handles, tasks, strict=True) if t.payload["tag"].endswith("-0")]
    wait_until(lambda: all(ledger.count("start", t) for t in first), 30, message="each key's first task runs")
    assert len(ledger.records("start")) == 4, "a key ran two tasks at once"  # the second of each key waits
    rescuer = run_worker("-c", "faulty.ledger", "--concurrency", "8", *timers, app="apps.faulty", env=env)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert sorted(h.result(timeout_s=60) for h in handles) == sorted(t.payload["tag"] for t in tasks)  # 0 lost
    assert rescuer.poll() is None
    for key in keys:  # per key, the second task started only once the rerun of the first had ended
        tags = {r["tag"]: r for r in ledger.records("end") if r["tag"].startswith(f"{key}-")}
        second = [r for r in ledger.records("start") if r["tag"] == f"{key}-1"]
        assert second[0]["t"] >= tags[f"{key}-0"]["t"]
    wait_until(lambda: client.hlen(f"{prefix}:{{faulty.ledger}}:tasks") == 0, 10, message="the index emptied")
    held = dispatcher.gateway.run(flow.holders(dispatcher.core.keys("faulty.ledger"), keys))
    assert set(held.values()) == {0}, f"permits leaked: {held}"  # 0 leaked
