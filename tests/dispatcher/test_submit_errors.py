"""What a failed ``submit_many`` says it wrote (sans-IO: the replies of a round trip, made up here)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import redis

from dispatcher import RedisError, RedisFull, RedisUnavailable, Settings, Task
from dispatcher.producer.shared import ProducerCore
from dispatcher.store.keys import CapabilityKeys
from dispatcher.store.streams import SUBMIT_CHUNK, Enqueue, Submitted
from dispatcher.store.wire import Enqueued

URL = "redis://:secret@127.0.0.1:1/0"


@dataclass
class FakeHandle:
    id: str
    capability: str
    store_result: bool


def make(task: Task, task_id: str) -> FakeHandle:
    return FakeHandle(task_id, task.capability, task.store_result)


Batches = list[tuple[CapabilityKeys, list[Enqueue]]]


def core_and_batch(n: int) -> tuple[ProducerCore, list[Task], Batches]:
    core = ProducerCore(Settings.build(redis_url=URL))
    tasks = [Task(capability="b" if i % 2 else "a", payload=i) for i in range(n)]
    return core, tasks, core.prepare(tasks)


def replies(batches: Batches, failed: dict[str, int], error: Exception) -> Submitted:
    """``Submitted`` for ``batches`` where the script calls from index ``failed[capability]`` on failed."""
    enqueued: list[Enqueued | None] = []
    errors: list[Exception] = []
    for keys, items in batches:
        for call, start in enumerate(range(0, len(items), SUBMIT_CHUNK)):
            chunk = items[start : start + SUBMIT_CHUNK]
            if call >= failed.get(keys.capability, 1 << 30):
                enqueued += [None] * len(chunk)
                errors.append(error)
            else:
                enqueued += [Enqueued(item.task_id, added=True) for item in chunk]
    return Submitted(enqueued, errors)


OOM = redis.exceptions.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")


def test_handles_follow_the_input_order_across_capabilities() -> None:
    core, tasks, batches = core_and_batch(7)
    handles = core.handles(tasks, batches, replies(batches, {}, OOM), make)
    assert [(h.id, h.capability) for h in handles] == [(t.id, t.capability) for t in tasks]


def test_a_refusal_mid_batch_lists_the_written_handles_in_input_order_and_counts_them() -> None:
    core, tasks, batches = core_and_batch(4 * SUBMIT_CHUNK)  # 2 calls per capability
    with pytest.raises(RedisFull) as info:
        core.handles(tasks, batches, replies(batches, {"b": 1}, OOM), make)
    written = [t for t in tasks if t.capability == "a"] + [t for t in tasks if t.capability == "b"][:SUBMIT_CHUNK]
    order = {t.id: i for i, t in enumerate(tasks)}
    assert info.value.submitted is not None
    assert [h.id for h in info.value.submitted] == [t.id for t in sorted(written, key=lambda t: order[t.id])]
    assert str(info.value) == (
        "Redis at redis://:***@127.0.0.1:1/0 is full (maxmemory reached): 1500 of 2000 tasks were submitted "
        "(error.submitted); the others were not written"
    )
    assert info.value.__cause__ is OOM


def test_a_transient_refusal_is_unavailable_and_says_the_same() -> None:
    core, tasks, batches = core_and_batch(2 * SUBMIT_CHUNK)
    busy = redis.exceptions.BusyLoadingError("LOADING Redis is loading the dataset in memory")
    with pytest.raises(RedisUnavailable, match=r"unavailable: LOADING .*; none of the 1000 tasks was written") as info:
        core.handles(tasks, batches, replies(batches, {"a": 0, "b": 0}, busy), make)
    assert info.value.submitted == []


def test_a_script_error_that_may_have_written_part_of_its_call_says_so() -> None:
    core, tasks, batches = core_and_batch(2 * SUBMIT_CHUNK)
    wrong = redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
    with pytest.raises(RedisError) as info:
        core.handles(tasks, batches, replies(batches, {"b": 0}, wrong), make)
    assert type(info.value) is RedisError
    assert info.value.submitted is not None and len(info.value.submitted) == SUBMIT_CHUNK
    assert "500 of 1000 tasks were submitted (error.submitted); a failed script call may have written" in str(
        info.value
    )
    assert "submitting the same Task objects again adds none twice" in str(info.value)
