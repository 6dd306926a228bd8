"""A worker serving several capabilities: entry ids repeat across streams, and nothing may mix them up."""

from __future__ import annotations

from typing import Any

import redis
from helpers import wait_exit

from dispatcher import Dispatcher, Task
from dispatcher.store import codec
from dispatcher.store.keys import KeySpace


def test_the_same_entry_id_in_two_streams_is_two_tasks(
    client: redis.Redis, dispatcher: Dispatcher, prefix: str, run_worker: Any
) -> None:
    # Two streams hand out the same id in the same millisecond all the time; force it.
    keyspace = KeySpace(prefix)
    tasks = [Task(capability="echo", payload="a"), Task(capability="noop", payload="b")]
    for task in tasks:
        keys = keyspace.capability(task.capability)
        fields = codec.entry_fields(codec.encode_task(task, 1 << 16))
        client.xadd(keys.stream, dict(zip(fields[::2], fields[1::2], strict=True)), id="1-1")  # type: ignore[arg-type]
        client.hset(keys.index, task.id, "1-1")

    worker = run_worker("--capability", "echo", "--capability", "noop", "--burst")
    assert wait_exit(worker, timeout_s=30) == 0, "a burst worker exits once both are settled"
    assert dispatcher.handle(tasks[0].id, "echo").result(timeout_s=5) == "a"
    assert dispatcher.handle(tasks[1].id, "noop").result(timeout_s=5) is None
    for task in tasks:
        keys = keyspace.capability(task.capability)
        assert client.xlen(keys.stream) == 0
        assert client.xpending(keys.stream, "workers")["pending"] == 0
