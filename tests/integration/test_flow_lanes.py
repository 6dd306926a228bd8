"""Flow control through delays, retries and dead-letter requeues, end to end with real workers, the mover and the
admitter: a delayed rate-limited task waits for its units when due, a retry (and a RateLimited hand-back) takes its
units again, a keyed task in backoff holds no permit, a requeued dead letter waits for its key's permit, and plain
tasks go their way as before. Each flow-controlled case runs twice: as it is, and as a tenant's task (with a
``fairness_key``, which rejoins its tenant's queue and is admitted by the fair gate). After each flow nothing of
flow control is left in the keyspace."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis
from apps.faulty import LEDGER_ENV, Ledger
from conftest import WorkerRunner
from helpers import keyspace, wait_until, workers_in_threads

from dispatcher import Dispatcher, KeySpace, RateLimited, Reject, Retry, Settings, Task
from dispatcher.fleet import ratelimits
from dispatcher.fleet.deadletters import DeadLetters
from dispatcher.store import flow, limits, wire
from dispatcher.store.keys import CapabilityKeys
from workers import Registry

MINUTE_MS = 60_000


class Runs:
    """Every run of a handler, in order, as (payload, attempt, event), and the most runs of a key at once."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int, str]] = []
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.release = threading.Event()

    def record(self, task: Task, event: str) -> None:
        with self.lock:
            self.log.append((str(task.payload), task.attempt, event))
            key = str(task.concurrency_key)
            if event == "start":
                self.now[key] += 1
                self.most[key] = max(self.most[key], self.now[key])
            else:
                self.now[key] -= 1

    def started(self, payload: str) -> bool:
        with self.lock:
            return any(p == payload and e == "start" for p, _, e in self.log)

    def position(self, payload: str, attempt: int, event: str) -> int:
        with self.lock:
            return self.log.index((payload, attempt, event))

    def attempts(self, payload: str) -> list[int]:
        with self.lock:
            return [a for p, a, e in self.log if p == payload and e == "start"]


def serve(settings: Settings, runs: Runs, fail: Callable[[Task], BaseException | None]) -> Any:
    """Two in-process workers of capability ``lane``: each run is recorded; ``fail`` says what the run raises
    (None: it succeeds); a payload starting with "hold" runs until ``runs.release`` is set."""

    def handler(task: Task) -> str:
        runs.record(task, "start")
        try:
            if str(task.payload).startswith("hold"):
                assert runs.release.wait(30), "never released"
            error = fail(task)
            if error is not None:
                raise error
            return str(task.payload)
        finally:
            runs.record(task, "end")

    registry = Registry()
    registry.register("lane", handler)
    return workers_in_threads(registry, ["lane"], settings, count=2, concurrency=4)


@pytest.fixture
def runs() -> Runs:
    return Runs()


@pytest.fixture
def keys(dispatcher: Dispatcher) -> CapabilityKeys:
    return dispatcher.core.keys("lane")


@pytest.fixture(params=[None, "tenant-1"], ids=["own", "tenant"])
def tenant(request: pytest.FixtureRequest) -> dict[str, str]:
    """The extra submit option of a case: none, or a ``fairness_key`` (the task waits in its tenant's queue)."""
    return {} if request.param is None else {"fairness_key": request.param}


def waits_in(keys: CapabilityKeys, tenant: dict[str, str], own: str) -> str:
    """The set a waiting task of the case is in: ``own`` (limited or keyed), or its tenant's queue."""
    return keys.fair(tenant["fairness_key"]) if tenant else own


def takes_since(dispatcher: Dispatcher, name: str, since_ms: float) -> int:
    """Units taken from limit ``name`` since ``since_ms`` (Redis' clock), for a limit of 1 unit per minute: each
    take advances its arrival time by one minute, far more than the test lasts, so the count is exact."""
    states, _ = dispatcher.gateway.run(limits.every(dispatcher.core.keyspace))
    (state,) = [s for s in states if s.name == name]
    return int((state.tat_ms - since_ms) // MINUTE_MS)


def redis_ms(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) / 1000


def nothing_left(dispatcher: Dispatcher, client: redis.Redis, settings: Settings, keys: CapabilityKeys) -> None:
    """The keyspace left behind once every task settled: no waiting set, delayed task or index field, and no
    permit held (stale members are removed at the gate's next look, done here as the admitter would)."""
    wait_until(lambda: client.hlen(keys.index) == 0, 20, message="the index emptied")
    left = keyspace(client, settings.prefix)
    flow_keys = {*keys.waiting_sets, keys.delayed, keys.tenants, keys.fair_held}
    assert not left & flow_keys, left & flow_keys
    assert not [k for k in left if k.startswith(keys.fair_prefix)]
    permit_sets = sorted(k for k in left if k.startswith(keys.permits_prefix))
    concurrency_keys = [k[len(keys.permits_prefix) :] for k in permit_sets]
    held = dispatcher.gateway.run(flow.holders(keys, concurrency_keys))
    assert set(held.values()) <= {0}, held
    assert not [k for k in keyspace(client, settings.prefix) if k.startswith(keys.permits_prefix)]


def test_a_delayed_rate_limited_task_waits_for_units_when_due(
    dispatcher: Dispatcher,
    client: redis.Redis,
    settings: Settings,
    runs: Runs,
    keys: CapabilityKeys,
    tenant: dict[str, str],
) -> None:
    ratelimits.define(dispatcher.gateway, dispatcher.core.keyspace, "api", 600.0, 5)
    dispatcher.consume("api", 10_000)  # the limit owes ~1,000 s of units: nothing fits until it is refunded
    with serve(settings, runs, lambda t: None):
        handle = dispatcher.submit("lane", "delayed", rate_limits={"api": 1}, delay_s=0.3, **tenant)
        waiting = waits_in(keys, tenant, keys.limited)
        wait_until(lambda: client.zscore(waiting, handle.id) is not None, 20, message="due: waiting for its units")
        assert client.zcard(keys.delayed) == 0 and client.xlen(keys.stream) == 0
        assert handle.status() == "queued" and not runs.started("delayed")
        dispatcher.consume("api", -10_000)  # the units are there again: the gate lets it in
        assert handle.result(timeout_s=20) == "delayed"
    assert runs.attempts("delayed") == [1]
    nothing_left(dispatcher, client, settings, keys)


@pytest.mark.parametrize("how", ["retry", "rate_limited"])
def test_a_retried_rate_limited_task_takes_its_units_again(
    how: str,
    dispatcher: Dispatcher,
    client: redis.Redis,
    settings: Settings,
    runs: Runs,
    keys: CapabilityKeys,
    tenant: dict[str, str],
) -> None:
    """The limit counts every attempt: a retry after its backoff, and a RateLimited hand-back (which spends no
    attempt) once the pause of the limit it named is over, each go through the gate again."""
    ratelimits.define(dispatcher.gateway, dispatcher.core.keyspace, "api", 1.0, 5)  # 1 unit per minute, burst 5
    ratelimits.define(dispatcher.gateway, dispatcher.core.keyspace, "provider", 6000.0, 10)
    since_ms = redis_ms(client)

    def fail(task: Task) -> BaseException | None:
        if len(runs.attempts(str(task.payload))) > 1:  # the second run succeeds
            return None
        return Retry(delay_s=0.2) if how == "retry" else RateLimited(retry_after_s=0.3, limit="provider")

    with serve(settings, runs, fail):
        handle = dispatcher.submit("lane", "twice", rate_limits={"api": 1, "provider": 1}, max_retries=1, **tenant)
        assert handle.result(timeout_s=30) == "twice"
    assert runs.attempts("twice") == ([1, 2] if how == "retry" else [1, 1])
    assert takes_since(dispatcher, "api", since_ms) == 2, "the second run did not take its unit"
    nothing_left(dispatcher, client, settings, keys)


def test_a_reclaimed_rate_limited_task_takes_its_units_again(
    dispatcher: Dispatcher,
    client: redis.Redis,
    run_worker: WorkerRunner,
    ledger: Ledger,
    prefix: str,
    tenant: dict[str, str],
) -> None:
    """A task with rate_limits and no concurrency_key, whose worker is killed with kill -9 mid-run: its rerun
    calls the provider again, so the reaper's reclaim goes through the limit gate (1 unit per minute: counted)."""
    ratelimits.define(dispatcher.gateway, dispatcher.core.keyspace, "api", 1.0, 5)
    since_ms = redis_ms(client)
    timers = ("--heartbeat-ttl-s", "2", "--reaper-interval-s", "0.5", "--block-ms", "200")
    env = {LEDGER_ENV: ledger.path}
    victim = run_worker("-c", "faulty.ledger", "--concurrency", "2", *timers, app="apps.faulty", env=env)
    wait_until(lambda: client.hlen(KeySpace(prefix).workers) == 1, 30, message="the victim registered")
    payload = {"first_sleep_s": 60, "tag": "cut"}
    handle = dispatcher.submit("faulty.ledger", payload, rate_limits={"api": 1}, **tenant)
    wait_until(lambda: ledger.count("start", handle.id), 30, message="the task runs on the victim")
    rescuer = run_worker("-c", "faulty.ledger", "--concurrency", "2", *timers, app="apps.faulty", env=env)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert handle.result(timeout_s=60) == "cut"
    assert rescuer.poll() is None
    assert ledger.count("start", handle.id) == 2
    assert takes_since(dispatcher, "api", since_ms) == 2, "the reclaimed run did not take its unit"
    assert handle.info().attempt == 2
    nothing_left(dispatcher, client, dispatcher.settings, dispatcher.core.keys("faulty.ledger"))


def test_a_keyed_task_in_backoff_holds_no_permit(
    dispatcher: Dispatcher,
    client: redis.Redis,
    settings: Settings,
    runs: Runs,
    keys: CapabilityKeys,
    tenant: dict[str, str],
) -> None:
    ratelimits.set_concurrency(dispatcher.gateway, dispatcher.core.keyspace, "lane", 1)

    def fail(task: Task) -> BaseException | None:
        return Retry(delay_s=3) if task.payload == "first" and task.attempt == 1 else None

    with serve(settings, runs, fail):
        first = dispatcher.submit("lane", "first", concurrency_key="repo", max_retries=1, **tenant)
        wait_until(lambda: first.info().attempt == 2, 20, message="the first task failed and waits in backoff")
        second = dispatcher.submit("lane", "second", concurrency_key="repo", **tenant)
        assert second.result(timeout_s=20) == "second"
        assert first.result(timeout_s=30) == "first"
    # The second task ran while the first waited out its backoff, and the first's retry took a permit again.
    assert runs.position("second", 1, "end") < runs.position("first", 2, "start")
    assert runs.most["repo"] == 1
    nothing_left(dispatcher, client, settings, keys)


def test_a_requeued_dead_letter_of_a_keyed_task_waits_for_a_permit(
    dispatcher: Dispatcher,
    client: redis.Redis,
    settings: Settings,
    runs: Runs,
    keys: CapabilityKeys,
    tenant: dict[str, str],
) -> None:
    ratelimits.set_concurrency(dispatcher.gateway, dispatcher.core.keyspace, "lane", 1)
    letters = DeadLetters(dispatcher.gateway, dispatcher.core.keyspace, settings.max_payload_bytes)

    def fail(task: Task) -> BaseException | None:
        return Reject("bad") if task.payload == "dead" and len(runs.attempts("dead")) == 1 else None

    with serve(settings, runs, fail):
        dead = dispatcher.submit("lane", "dead", concurrency_key="repo", **tenant)
        wait_until(lambda: dead.status() == "dead", 20, message="the task was dead-lettered")
        holder = dispatcher.submit("lane", "hold", concurrency_key="repo", **tenant)
        wait_until(lambda: runs.started("hold"), 20, message="the key's one permit is held")
        assert letters.requeue("lane", [dead.id]) == (1, [])
        waiting = waits_in(keys, tenant, keys.keyed)  # waiting for the permit, not on the stream
        wait_until(lambda: client.zscore(waiting, dead.id) is not None, 20, message="the letter waits for a permit")
        assert dead.status() == "queued"
        runs.release.set()
        assert holder.result(timeout_s=20) == "hold"
        assert dead.result(timeout_s=20) == "dead"
    assert runs.attempts("dead") == [1, 1]  # a fresh attempt count
    rerun = [i for i, (payload, _, event) in enumerate(runs.log) if payload == "dead" and event == "start"][1]
    assert runs.position("hold", 1, "end") < rerun, "the requeued task started while the key's permit was held"
    assert runs.most["repo"] == 1
    nothing_left(dispatcher, client, settings, keys)


def test_plain_tasks_take_their_way_as_before(
    dispatcher: Dispatcher, client: redis.Redis, settings: Settings, runs: Runs, keys: CapabilityKeys
) -> None:
    def fail(task: Task) -> BaseException | None:
        return Retry(delay_s=1) if task.payload == "retried" and task.attempt == 1 else None

    with serve(settings, runs, fail):
        delayed = dispatcher.submit("lane", "delayed", delay_s=1)
        retried = dispatcher.submit("lane", "retried", max_retries=1)
        wait_until(lambda: retried.info().attempt == 2, 20, message="the plain task failed and waits in backoff")
        for handle in (delayed, retried):  # a record of no lane: the mover puts them straight onto the stream
            place = wire.place(client.hget(keys.index, handle.id))
            assert isinstance(place, wire.Delayed) and place.lane == b""
        assert delayed.result(timeout_s=20) == "delayed"
        assert retried.result(timeout_s=20) == "retried"
    assert runs.attempts("retried") == [1, 2]
    nothing_left(dispatcher, client, settings, keys)


def test_a_tenant_s_delayed_and_retried_tasks_rejoin_its_queue(
    dispatcher: Dispatcher, client: redis.Redis, settings: Settings, runs: Runs, keys: CapabilityKeys
) -> None:
    """A task with a fairness_key alone: a delay and a retry's backoff end in its tenant's queue (lane f), from
    which the fair gate admits it, behind none of the tenant's tasks of lower priority."""

    def fail(task: Task) -> BaseException | None:
        return Retry(delay_s=2) if task.payload == "retried" and task.attempt == 1 else None

    with serve(settings, runs, fail):
        delayed = dispatcher.submit("lane", "delayed", delay_s=2, fairness_key="t", priority=3)
        retried = dispatcher.submit("lane", "retried", max_retries=1, fairness_key="t")
        wait_until(lambda: retried.info().attempt == 2, 20, message="the tenant's task failed and waits in backoff")
        for handle, lane in ((delayed, b"f3"), (retried, b"f0")):
            place = wire.place(client.hget(keys.index, handle.id))
            assert isinstance(place, wire.Delayed) and place.lane == lane
        assert delayed.result(timeout_s=20) == "delayed"
        assert retried.result(timeout_s=20) == "retried"
    assert runs.attempts("retried") == [1, 2] and runs.attempts("delayed") == [1]
    nothing_left(dispatcher, client, settings, keys)
