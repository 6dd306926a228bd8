"""Rate limits end to end, with real workers and the admitter: tasks start no faster than the limit allows (never
more than rate + burst in any 1 s window), every task runs once, and a task whose limit is exhausted does not hold
up the tasks of another limit. Bad input at submit is refused with nothing written."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from helpers import keyspace, wait_until, workers_in_threads

from dispatcher import AsyncDispatcher, Dispatcher, InvalidTask, RateLimited, Settings, Task
from dispatcher.fleet import ratelimits
from dispatcher.store import limits
from workers import Registry, Worker

RATE_PER_S = 20
BURST = 5
TASKS = 80


class Starts:
    """Start times (time.time()) of each payload, from the worker's handler threads."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.lock = threading.Lock()

    def handler(self, task: Task) -> None:
        with self.lock:
            assert str(task.payload) not in self.at, f"{task.payload} ran twice"
            self.at[str(task.payload)] = time.time()

    def count(self) -> int:
        with self.lock:
            return len(self.at)


@pytest.fixture
def starts(settings: Settings) -> Iterator[Starts]:
    got = Starts()
    registry = Registry()
    registry.register("llm", got.handler)
    with workers_in_threads(registry, ["llm"], settings, count=2, concurrency=8):
        yield got


def define(dispatcher: Dispatcher, name: str, rate: str, burst: int) -> None:
    ratelimits.define(dispatcher.gateway, dispatcher.core.keyspace, name, ratelimits.parse_rate(rate), burst)


def test_starts_never_exceed_rate_plus_burst_in_any_second(
    dispatcher: Dispatcher, client: redis.Redis, settings: Settings, starts: Starts
) -> None:
    define(dispatcher, "api-rps", f"{RATE_PER_S}/s", BURST)
    dispatcher.submit_many([Task(capability="llm", payload=f"t{i}", rate_limits={"api-rps": 1}) for i in range(TASKS)])
    wait_until(lambda: starts.count() == TASKS, 60, message="every rate-limited task ran")
    times = sorted(starts.at.values())
    worst = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
    span_s = times[-1] - times[0]
    rate = (TASKS - BURST) / span_s
    print(f"\n{TASKS} tasks over {span_s:.2f} s: {rate:.1f}/s after the burst; busiest 1 s window {worst}")
    assert worst <= RATE_PER_S + BURST
    assert rate <= RATE_PER_S * 1.05
    assert rate >= RATE_PER_S * 0.8, "the admitter let the limit go unused"
    prefix = settings.prefix
    wait_until(lambda: client.hlen(f"{prefix}:{{llm}}:tasks") == 0, 10, message="the index emptied")
    assert not [k for k in keyspace(client, prefix) if k.endswith((":limited", ":ready"))]


def test_an_exhausted_limit_does_not_hold_up_another_limit(
    dispatcher: Dispatcher, settings: Settings, starts: Starts
) -> None:
    define(dispatcher, "slow", "1/min", 1)
    define(dispatcher, "free", "6000/min", 100)
    slow = [Task(capability="llm", payload=f"slow{i}", rate_limits={"slow": 1}) for i in range(5)]
    free = [Task(capability="llm", payload=f"free{i}", rate_limits={"free": 1}) for i in range(20)]
    dispatcher.submit_many([*slow, *free])  # the slow ones first: ahead in rank
    wait_until(lambda: starts.count() == 21, 30, message="the free tasks ran past the exhausted limit")
    assert sum(1 for p in starts.at if p.startswith("slow")) == 1
    view = ratelimits.describe(dispatcher.gateway, dispatcher.core.keyspace)
    assert view.waiting_for_limit == {"llm": 4}


@pytest.mark.parametrize(
    ("wanted", "said"),
    [
        ({"nope": 1}, "unknown rate limit 'nope'"),
        ({"api": 0}, "units of 'api' must be an integer from 1"),
        ({"api": -3}, "units of 'api' must be an integer from 1"),
        ({"api": 11}, "exceed its burst of 10"),
        ({"Bad Name": 1}, "invalid rate limit name"),
        ({f"l{i}": 1 for i in range(9)}, "name 1 to 8 rate limits"),
    ],
)
def test_bad_rate_limits_at_submit_write_nothing(
    wanted: dict[str, int], said: str, dispatcher: Dispatcher, client: redis.Redis, settings: Settings
) -> None:
    define(dispatcher, "api", "600/min", 10)
    with pytest.raises(InvalidTask, match=said):
        dispatcher.submit("llm", 1, rate_limits=wanted)
    assert not [k for k in keyspace(client, settings.prefix) if "{llm}" in k]


def test_rate_limited_pauses_the_limit_fleet_wide_and_spends_no_attempt(
    dispatcher: Dispatcher, client: redis.Redis, settings: Settings
) -> None:
    define(dispatcher, "provider", "6000/min", 50)
    runs: list[tuple[str, int, float]] = []
    lock = threading.Lock()

    def handler(task: Task) -> str:
        with lock:
            runs.append((str(task.payload), task.attempt, time.time()))
            first = len(runs) == 1
        if first:
            raise RateLimited(retry_after_s=1.5, limit="provider")
        return "ok"

    registry = Registry()
    registry.register("llm", handler)
    worker = Worker(registry, ["llm"], settings, concurrency=4)
    thread = threading.Thread(target=lambda: asyncio.run(worker.run()), daemon=True)
    thread.start()
    try:
        first = dispatcher.submit("llm", "first", rate_limits={"provider": 1}, max_retries=0)
        wait_until(lambda: len(runs) == 1, 30, message="the first task ran and hit the provider's 429")
        paused_at = runs[0][2]
        later = dispatcher.submit("llm", "later", rate_limits={"provider": 1})
        assert first.result(timeout_s=30) == "ok"  # max_retries=0: a spent attempt would have buried it
        assert later.result(timeout_s=30) == "ok"
    finally:
        worker.stop()
        thread.join(timeout=30)
    by_payload = {p: (a, t) for p, a, t in runs[1:]}
    assert [a for p, a, _ in runs if p == "first"] == [1, 1]  # the same attempt, run again
    assert by_payload["first"][1] - paused_at >= 1.4
    assert by_payload["later"][1] - paused_at >= 1.4, "a task of the paused limit started during the pause"


def test_consume_debits_beyond_the_burst_and_a_refund_gives_back(dispatcher: Dispatcher) -> None:
    define(dispatcher, "tpm", "60/min", 10)  # 1 unit per second
    keyspace = dispatcher.core.keyspace

    def available() -> int:
        (state,), now_ms = dispatcher.gateway.run(limits.every(keyspace))
        return state.available(now_ms)

    dispatcher.consume("tpm", 25)  # the call cost more than the burst: the limit owes 15 units
    assert available() == 0
    dispatcher.consume("tpm", -25)
    assert available() >= 9
    with pytest.raises(InvalidTask, match="unknown rate limit 'nope'"):
        dispatcher.consume("nope", 1)
    with pytest.raises(InvalidTask, match="invalid rate limit name"):
        dispatcher.consume("No Such", 1)


def test_the_asyncio_dispatcher_checks_limits_and_consumes_alike(dispatcher: Dispatcher, settings: Settings) -> None:
    define(dispatcher, "api", "600/min", 10)

    async def scenario() -> None:
        async with AsyncDispatcher(settings) as d:
            with pytest.raises(InvalidTask, match="unknown rate limit 'nope'"):
                await d.submit("llm", 1, rate_limits={"nope": 1})
            handle = await d.submit("llm", 1, rate_limits={"api": 1})
            assert await handle.status() == "queued"
            await d.consume("api", 10)
            with pytest.raises(InvalidTask, match="unknown rate limit"):
                await d.consume("nope", 1)

    asyncio.run(scenario())
    (state,), now_ms = dispatcher.gateway.run(limits.every(dispatcher.core.keyspace))
    assert state.available(now_ms) == 0
