"""The circuit breaker in a running worker (issue 12, item 2), in-process: a batch of bad input never stalls the
capability, and a broken worker stops dead-lettering the queue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
from helpers import serve_worker, until

from dispatcher import Dispatcher, Settings, Task
from dispatcher.cli.render import stats_table
from dispatcher.fleet.stats import CapabilityStats, collect
from dispatcher.store.keys import KeySpace
from workers import Registry, Reject, Worker


def serve(settings: Settings, registry: Registry, capability: str, scenario: Callable[[Worker], Awaitable[Any]]) -> Any:
    return serve_worker(settings, registry, capability, scenario, upkeep=True)


@pytest.mark.parametrize("bad_input", ["reject", "declared"])
def test_fifty_bad_tasks_then_good_ones_start_without_waiting_for_a_cool_down(
    settings: Settings, dispatcher: Dispatcher, bad_input: str
) -> None:
    def handle(task: Task) -> Any:
        if task.payload == "bad":
            if bad_input == "reject":
                raise Reject("malformed payload")
            return {}["rows"]  # a KeyError, declared as an input error below
        return "ok"

    registry = Registry()
    registry.register("input", handle, input_errors=(KeyError,))
    long_cooldown = Settings.build(**{**settings.model_dump(), "breaker_cooldown_s": 60.0})

    async def scenario(worker: Worker) -> float:
        bad = dispatcher.submit_many([Task(capability="input", payload="bad") for _ in range(50)])
        await until(lambda: all(h.status() == "dead" for h in bad), "the bad tasks dead-lettered")
        began = time.monotonic()
        good = dispatcher.submit_many([Task(capability="input", payload="good") for _ in range(5)])
        await until(lambda: all(h.status() == "succeeded" for h in good), "the good tasks run")
        assert worker.breakers["input"].state == "closed"
        return time.monotonic() - began

    took = serve(long_cooldown, registry, "input", scenario)
    print(f"\n5 good tasks after 50 bad ones ran in {took:.2f} s (the cool-down is 60 s)")


def test_a_handler_that_fails_every_task_opens_the_circuit_and_the_rest_wait_in_the_stream(
    settings: Settings, dispatcher: Dispatcher, client: redis.Redis, prefix: str
) -> None:
    def broken(task: Task) -> None:
        raise ConnectionError("the model server is down")

    registry = Registry()
    registry.register("gpu", broken)
    slow_retry = Settings.build(**{**settings.model_dump(), "breaker_cooldown_s": 60.0, "backoff_base_s": 60.0})
    keys = KeySpace(prefix).capability("gpu")

    def gpu_stats() -> CapabilityStats:
        return next(c for c in collect(dispatcher.gateway, KeySpace(prefix)).capabilities if c.name == "gpu")

    async def scenario(worker: Worker) -> tuple[int, int, CapabilityStats, str]:
        handles = dispatcher.submit_many([Task(capability="gpu", payload=i, max_retries=0) for i in range(50)])
        await until(lambda: worker.breakers["gpu"].state == "open", "the circuit opens")
        await until(lambda: gpu_stats().unserved, "stats say that no live worker serves gpu")
        await asyncio.sleep(1.0)  # it stays open: nothing more is read
        dead = sum(1 for h in handles if h.status() == "dead")
        waiting = client.xlen(keys.stream) - client.xpending(keys.stream, "workers")["pending"]
        return dead, waiting, gpu_stats(), stats_table(collect(dispatcher.gateway, KeySpace(prefix)))

    dead, waiting, stats, table = serve(slow_retry, registry, "gpu", scenario)
    print(f"\nbroken handler: {dead} of 50 dead-lettered before the circuit opened; {waiting} wait in the stream")
    assert dead <= 10, "the broken worker drained the queue into dead letters"
    assert waiting >= 40
    assert (stats.workers, stats.open_circuits) == (1, 1)
    assert "WARNING: gpu: the circuit of all 1 live worker(s) is open" in table
