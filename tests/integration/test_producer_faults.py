"""Producer errors that must say what happened, against real redis-servers: a Redis that fills in the middle of a
``submit_many``, and a connection lost before the batch was sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from conftest import RedisServer

from dispatcher import Dispatcher, RedisFull, RedisUnavailable, Settings, Task
from dispatcher.store import codec
from dispatcher.store.keys import KeySpace

BATCH = 5000
HEADROOM_BYTES = 3 * 1024 * 1024
"""Memory left under maxmemory before the batch: room for a few submit script calls of 500 tasks of ~1 KB."""


@pytest.fixture
def small_redis() -> Iterator[RedisServer]:
    """A private redis-server whose maxmemory the test sets (noeviction: a full Redis refuses writes)."""
    with RedisServer(extra_args=("--maxmemory-policy", "noeviction")) as server:
        yield server


def queued_ids(client: redis.Redis, prefix: str, capability: str) -> list[str]:
    stream = KeySpace(prefix).capability(capability).stream
    return [codec.decode_entry(capability, i.decode(), f, 1 << 20).task.id for i, f in client.xrange(stream)]


def test_a_redis_that_fills_mid_batch_says_exactly_what_was_written_and_a_resubmit_adds_nothing_twice(
    small_redis: RedisServer, prefix: str
) -> None:
    admin = small_redis.client()
    settings = Settings.build(redis_url=small_redis.url, prefix=prefix)
    with Dispatcher(settings) as d:
        d.submit("warm", 0)  # loads the submit script; "echo" is registered by the batch itself
        admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + HEADROOM_BYTES)
        tasks = [Task(capability="echo", payload="x" * 1000) for _ in range(BATCH)]
        with pytest.raises(RedisFull) as info:
            d.submit_many(tasks)
        error = info.value
        assert error.submitted is not None
        written = len(error.submitted)
        print(f"\n{error}")
        assert 0 < written < BATCH, "the batch did not fill Redis mid-way: adjust HEADROOM_BYTES"
        assert str(error).endswith(
            f"is full (maxmemory reached): {written} of {BATCH} tasks were submitted (error.submitted); "
            "the others were not written"
        )
        # Exactly the handles of what Redis holds: whole script calls of 500, in input order.
        assert written % 500 == 0
        assert [h.id for h in error.submitted] == [t.id for t in tasks[:written]]
        assert queued_ids(admin, prefix, "echo") == [t.id for t in tasks[:written]]
        assert all(h.capability == "echo" for h in error.submitted)

        admin.config_set("maxmemory", 0)  # memory freed
        handles = d.submit_many(tasks)  # the same Task objects, so the same ids
        assert [h.id for h in handles] == [t.id for t in tasks]
        assert queued_ids(admin, prefix, "echo") == [t.id for t in tasks]  # 5,000 queued, none twice
        assert admin.hlen(KeySpace(prefix).capability("echo").index) == BATCH


def test_an_error_before_anything_was_sent_says_none_was_written(small_redis: RedisServer, prefix: str) -> None:
    admin = small_redis.client()
    with Dispatcher(Settings.build(redis_url=small_redis.url, prefix=prefix)) as d:
        d.submit("warm", 0)
        admin.config_set("maxmemory", 1)  # full at once: even registering the new capability is refused
        with pytest.raises(RedisFull) as info:
            d.submit_many([Task(capability="echo", payload=i) for i in range(3)])
        assert info.value.submitted == []
        assert "none of the 3 tasks was written" in str(info.value)
        with pytest.raises(RedisFull) as info:  # "warm" is registered: the submit script itself is refused
            d.submit_many([Task(capability="warm", payload=i) for i in range(3)])
        assert info.value.submitted == []
        assert "none of the 3 tasks was written" in str(info.value)


def test_a_connection_lost_during_the_batch_says_what_was_written_is_not_known(prefix: str) -> None:
    server = RedisServer().start()
    try:
        d = Dispatcher(Settings.build(redis_url=server.url, prefix=prefix, retry_attempts=0, connect_timeout_s=1))
        d.submit("echo", 0)  # registered: the next submit sends its batch at once
        server.kill()
        with pytest.raises(RedisUnavailable) as info:
            d.submit_many([Task(capability="echo", payload=i) for i in range(3)])
        assert info.value.submitted is None
        assert "it is not known which of the 3 tasks were written" in str(info.value)
        assert "submitting the same Task objects again adds none twice" in str(info.value)
        d.close()
    finally:
        server.stop()
