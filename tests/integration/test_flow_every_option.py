"""Expiry, idempotency, delays, retries with backoff and dead letters work with every flow-control option (and with
all four at once), end to end with real workers, the mover and the admitter: an expired task is dead-lettered
``expired`` without running; an idempotency key adds the task once; a delayed task starts no earlier than its
delay; a task that keeps failing retries with backoff, is dead-lettered ``max_retries``, and runs again once
requeued. After each flow nothing of flow control is left in the keyspace."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from helpers import keyspace, wait_until, workers_in_threads

from dispatcher import Dispatcher, Settings, Task, TaskDead
from dispatcher.fleet import ratelimits
from dispatcher.fleet.deadletters import DeadLetters
from dispatcher.store import flow
from workers import Registry

CAPABILITY = "every"
OPTIONS: dict[str, dict[str, Any]] = {
    "priority": {"priority": 7},
    "rate_limits": {"rate_limits": {"api": 1}},
    "concurrency_key": {"concurrency_key": "repo"},
    "fairness_key": {"fairness_key": "tenant-1"},
    "all four": {"priority": 3, "rate_limits": {"api": 2}, "concurrency_key": "repo", "fairness_key": "tenant-2"},
}


class Runs:
    """Every run's start: (payload, attempt, epoch seconds); payloads starting with "fail" fail while ``failing``."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, int, float]] = []
        self.lock = threading.Lock()
        self.failing = True

    def handler(self, task: Task) -> str:
        with self.lock:
            self.starts.append((str(task.payload), task.attempt, time.time()))
        if str(task.payload).startswith("fail") and self.failing:
            raise RuntimeError("provider said no")
        return str(task.payload)

    def of(self, payload: str) -> list[tuple[int, float]]:
        with self.lock:
            return [(a, t) for p, a, t in self.starts if p == payload]

    def count(self) -> Counter[str]:
        with self.lock:
            return Counter(p for p, _, _ in self.starts)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings with a backoff of no jitter: 0.2 s after the first failure, 0.4 s after the second."""
    return settings.model_copy(update={"backoff_base_s": 0.2, "backoff_factor": 2.0, "backoff_jitter": 0.0})


@pytest.fixture(params=list(OPTIONS), ids=list(OPTIONS))
def options(request: pytest.FixtureRequest, dispatcher: Dispatcher) -> dict[str, Any]:
    ratelimits.define(dispatcher.gateway, dispatcher.core.keyspace, "api", 60_000.0, 100)
    ratelimits.set_concurrency(dispatcher.gateway, dispatcher.core.keyspace, CAPABILITY, 2)
    return dict(OPTIONS[request.param])


@pytest.fixture
def runs(settings: Settings) -> Iterator[Runs]:
    found = Runs()
    registry = Registry()
    registry.register(CAPABILITY, found.handler)
    with workers_in_threads(registry, [CAPABILITY], settings, count=2, concurrency=4):
        yield found


def nothing_left(dispatcher: Dispatcher, client: redis.Redis, settings: Settings) -> None:
    keys = dispatcher.core.keys(CAPABILITY)
    wait_until(lambda: client.hlen(keys.index) == 0, 20, message="the index emptied")
    left = keyspace(client, settings.prefix)
    flow_keys = {*keys.waiting_sets, keys.delayed, keys.tenants}
    assert not left & flow_keys, left & flow_keys
    assert not [k for k in left if k.startswith(keys.fair_prefix)]
    assert set(dispatcher.gateway.run(flow.holders(keys, ["repo"])).values()) <= {0}


def test_an_expired_task_is_dead_lettered_without_running(
    dispatcher: Dispatcher, client: redis.Redis, settings: Settings, options: dict[str, Any], runs: Runs
) -> None:
    expired = dispatcher.submit(CAPABILITY, "too late", expires_at=time.time() - 1, **options)
    fresh = dispatcher.submit(CAPABILITY, "in time", expires_at=time.time() + 60, **options)
    with pytest.raises(TaskDead) as caught:
        expired.result(timeout_s=20)
    assert caught.value.reason == "expired"
    assert fresh.result(timeout_s=20) == "in time"
    assert runs.count() == Counter({"in time": 1})
    nothing_left(dispatcher, client, settings)


def test_an_idempotency_key_adds_the_task_once(
    dispatcher: Dispatcher, client: redis.Redis, settings: Settings, options: dict[str, Any], runs: Runs
) -> None:
    first = dispatcher.submit(CAPABILITY, "first", idempotency_key="order-7", **options)
    again = dispatcher.submit(CAPABILITY, "second", idempotency_key="order-7", **options)
    assert again.id == first.id
    assert first.result(timeout_s=20) == "first"
    wait_until(lambda: client.hlen(dispatcher.core.keys(CAPABILITY).index) == 0, 20, message="settled")
    assert runs.count() == Counter({"first": 1})
    nothing_left(dispatcher, client, settings)


def test_a_delayed_task_starts_no_earlier_than_its_delay(
    dispatcher: Dispatcher, client: redis.Redis, settings: Settings, options: dict[str, Any], runs: Runs
) -> None:
    submitted = time.time()
    handle = dispatcher.submit(CAPABILITY, "later", delay_s=0.8, **options)
    assert handle.status() == "queued" and handle.info().delayed
    assert handle.result(timeout_s=20) == "later"
    ((attempt, started),) = runs.of("later")
    print(f"\nstarted {started - submitted:.3f} s after a 0.8 s delay")
    assert attempt == 1 and started - submitted >= 0.8 - 0.05  # this host's clock against Redis': same machine
    nothing_left(dispatcher, client, settings)


def test_a_failing_task_retries_with_backoff_then_dead_letters_and_runs_again_once_requeued(
    dispatcher: Dispatcher, client: redis.Redis, settings: Settings, options: dict[str, Any], runs: Runs
) -> None:
    handle = dispatcher.submit(CAPABILITY, "fail", max_retries=2, **options)
    with pytest.raises(TaskDead) as caught:
        handle.result(timeout_s=30)
    assert caught.value.reason == "max_retries"
    starts = runs.of("fail")
    assert [a for a, _ in starts] == [1, 2, 3]
    gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(starts)]
    print(f"\nbackoff gaps {[round(g, 3) for g in gaps]} s")
    assert gaps[0] >= 0.2 - 0.05 and gaps[1] >= 0.4 - 0.05, gaps  # each retry waited out its backoff
    runs.failing = False
    letters = DeadLetters(dispatcher.gateway, dispatcher.core.keyspace, settings.max_payload_bytes)
    assert letters.requeue(CAPABILITY, [handle.id]) == (1, [])
    assert handle.result(timeout_s=20) == "fail"
    assert [a for a, _ in runs.of("fail")] == [1, 2, 3, 1]  # a fresh attempt count
    nothing_left(dispatcher, client, settings)
