"""The producer API against a real redis-server: submit, idempotency, status, result, errors, ACL, asyncio."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import redis
from conftest import RedisServer, free_port
from helpers import keyspace, settle, wait_until

import dispatcher as dispatcher_pkg
from dispatcher import (
    AsyncDispatcher,
    Dispatcher,
    InvalidTask,
    PayloadTooLarge,
    RedisUnavailable,
    ResultNotStored,
    ResultTimeout,
    Settings,
    Task,
    TaskDead,
    TaskFailed,
)
from dispatcher.producer import sync as producer
from dispatcher.store import codec, transitions
from dispatcher.store.gateway import Gateway
from dispatcher.store.keys import GROUP, KeySpace
from dispatcher.store.transitions import Settle

SUCCEEDED = codec.Outcome(status="succeeded", value={"answer": 42})
FAILED = codec.Outcome(status="failed", error_type="ValueError", error_message="bad input", traceback="Traceback: x")


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"n": value}
    return value


DEEP_70 = _nested(70)
"""A payload nested 70 levels deep: msgpack encodes it, a worker's decoder refuses it (over 64)."""


# ---- submit -----------------------------------------------------------------------------------------------------


def test_submit_returns_a_handle_and_queues_one_entry(dispatcher: Dispatcher, client: redis.Redis, prefix: str) -> None:
    handle = dispatcher.submit("echo", {"x": 1}, max_retries=1)
    keys = KeySpace(prefix).capability("echo")
    ((entry_id, fields),) = client.xrange(keys.stream)
    delivery = codec.decode_entry("echo", entry_id.decode(), fields, 1 << 20)
    assert (delivery.task.id, delivery.task.payload, delivery.task.max_retries) == (handle.id, {"x": 1}, 1)
    assert handle.capability == "echo"
    assert keyspace(client, prefix) == {keys.stream, keys.index, f"{prefix}:capabilities"}
    assert client.smembers(f"{prefix}:capabilities") == {b"echo"}


def test_submit_many_keeps_order_and_ids(dispatcher: Dispatcher, client: redis.Redis, prefix: str) -> None:
    tasks = [Task(capability=("a" if i % 2 else "b"), payload=i) for i in range(7)]
    handles = dispatcher.submit_many(tasks)
    assert [h.id for h in handles] == [t.id for t in tasks]
    assert [h.capability for h in handles] == [t.capability for t in tasks]
    for cap in ("a", "b"):
        stream = KeySpace(prefix).capability(cap).stream
        payloads = [codec.decode_entry(cap, i.decode(), f, 1 << 20).task.payload for i, f in client.xrange(stream)]
        assert payloads == [t.payload for t in tasks if t.capability == cap]


def test_idempotency_key_returns_the_first_handle_and_enqueues_nothing(
    dispatcher: Dispatcher, client: redis.Redis, prefix: str
) -> None:
    first = dispatcher.submit("echo", 1, idempotency_key="order-7")
    before = {k: client.dump(k) for k in keyspace(client, prefix)}
    second = dispatcher.submit("echo", 2, idempotency_key="order-7")
    assert second.id == first.id
    assert {k: client.dump(k) for k in keyspace(client, prefix)} == before
    assert client.xlen(KeySpace(prefix).capability("echo").stream) == 1


def test_resubmitting_the_same_task_is_harmless(dispatcher: Dispatcher, client: redis.Redis, prefix: str) -> None:
    task = Task(capability="echo", payload=1)
    assert dispatcher.submit(task).id == dispatcher.submit(task).id == task.id
    assert client.xlen(KeySpace(prefix).capability("echo").stream) == 1


@pytest.mark.parametrize(
    ("args", "options", "error"),
    [
        (("Bad Cap", 1), {}, InvalidTask),
        (("echo\n", 1), {}, InvalidTask),
        (("echo", {"f": object()}), {}, InvalidTask),
        (("echo", "x" * (1 << 20)), {}, PayloadTooLarge),
        (("echo", 1), {"retries": 3}, InvalidTask),
        (("echo", 1), {"max_retries": "many"}, InvalidTask),
        (("echo", 1), {"delay_s": -1}, InvalidTask),
        ((Task(capability="echo"), 1), {}, InvalidTask),
        (("echo", {1: "int key"}), {}, InvalidTask),
        (("echo", {"k": {0.5: "float key"}}), {}, InvalidTask),
        (("echo", DEEP_70), {}, InvalidTask),
    ],
    ids=[
        "capability",
        "capability-newline",
        "unencodable",
        "oversized",
        "unknown-option",
        "bad-option",
        "negative-delay",
        "task-and-payload",
        "int-map-key",
        "float-map-key",
        "nesting-70",
    ],
)
def test_bad_input_raises_and_writes_nothing(
    dispatcher: Dispatcher,
    client: redis.Redis,
    prefix: str,
    args: tuple[Any, ...],
    options: dict[str, Any],
    error: type[Exception],
) -> None:
    dispatcher.submit("other", 0)  # something already there: it must stay exactly as it is
    before = {k: client.dump(k) for k in keyspace(client, prefix)}
    with pytest.raises(error) as info:
        dispatcher.submit(*args, **options)
    assert type(info.value) is error
    assert {k: client.dump(k) for k in keyspace(client, prefix)} == before


def test_unknown_option_names_the_option(dispatcher: Dispatcher) -> None:
    with pytest.raises(InvalidTask, match="unknown option 'retries'"):
        dispatcher.submit("echo", 1, retries=3)


def test_submit_many_is_all_or_nothing(dispatcher: Dispatcher, client: redis.Redis, prefix: str) -> None:
    with pytest.raises(PayloadTooLarge):
        dispatcher.submit_many([Task(capability="echo", payload=1), Task(capability="echo", payload="x" * (1 << 20))])
    assert keyspace(client, prefix) == set()


def test_submit_many_refuses_a_batch_that_repeats_a_task_id(
    dispatcher: Dispatcher, client: redis.Redis, prefix: str
) -> None:
    """``[Task(...)] * 1000`` is one task a thousand times: it queued one entry and returned 1000 handles."""
    task = Task(capability="echo", payload=1)
    with pytest.raises(InvalidTask, match=r"tasks 0 and 1 of the batch have the same id .*\[Task\(\.\.\.\) for _ in"):
        dispatcher.submit_many([task] * 1000)
    assert keyspace(client, prefix) == set()
    other = Task(capability="data", payload=2)
    with pytest.raises(InvalidTask, match="tasks 1 and 3"):
        dispatcher.submit_many([other, task, Task(capability="echo", payload=3), task])
    assert keyspace(client, prefix) == set()


def test_resubmitting_an_id_in_a_later_call_stays_a_no_op(dispatcher: Dispatcher, client: redis.Redis) -> None:
    task = Task(capability="echo", payload=1)
    (first,) = dispatcher.submit_many([task])
    (again,) = dispatcher.submit_many([task])
    assert again.id == first.id
    assert client.xlen(KeySpace(dispatcher.settings.prefix).capability("echo").stream) == 1


# ---- status and result ------------------------------------------------------------------------------------------


def test_status_queued_running_succeeded(
    dispatcher: Dispatcher, client: redis.Redis, settings: Settings, prefix: str
) -> None:
    handle = dispatcher.submit("echo", 1)
    assert handle.status() == "queued"
    stream = KeySpace(prefix).capability("echo").stream
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    assert handle.status() == "queued"  # a group that has not delivered it yet
    ((_, ((entry_id, _),)),) = client.xreadgroup(GROUP, "c1", {stream: ">"}, count=1)
    assert handle.status() == "running"
    keys = KeySpace(prefix).capability("echo")
    settle_ = Settle(keys, entry_id.decode(), "c1", handle.id, codec.encode_outcome(SUCCEEDED), 60_000)
    Gateway(client, settings.redis_url).run(transitions.record([settle_]))
    assert handle.status() == "succeeded"
    # The settle counted one completion in the capability's throughput ring (what stats reads for the last minute).
    assert keyspace(client, prefix) == {
        keys.stream, keys.result(handle.id), keys.throughput, f"{prefix}:capabilities"
    }  # fmt: skip


def test_status_delayed_is_queued_and_unknown_ids_are_unknown(dispatcher: Dispatcher) -> None:
    assert dispatcher.submit("echo", 1, delay_s=60).status() == "queued"
    assert dispatcher.handle("NOPE", "echo").status() == "unknown"


def test_status_failed(dispatcher: Dispatcher, client: redis.Redis, settings: Settings) -> None:
    handle = dispatcher.submit("echo", 1)
    settle(client, settings, handle, FAILED)
    assert handle.status() == "failed"


def test_result_returns_the_value_and_can_be_read_twice(
    dispatcher: Dispatcher, client: redis.Redis, settings: Settings
) -> None:
    handle = dispatcher.submit("echo", 1)
    settle(client, settings, handle, SUCCEEDED)
    assert handle.result(timeout_s=5) == {"answer": 42}
    assert handle.result(timeout_s=5) == {"answer": 42}
    assert dispatcher.handle(handle.id).result(timeout_s=5) == {"answer": 42}  # re-attached by id alone


def test_result_raises_task_failed_with_the_remote_error(
    dispatcher: Dispatcher, client: redis.Redis, settings: Settings
) -> None:
    handle = dispatcher.submit("echo", 1)
    settle(client, settings, handle, FAILED)
    with pytest.raises(TaskFailed) as info:
        handle.result(timeout_s=5)
    assert type(info.value) is TaskFailed
    assert (info.value.task_id, info.value.error_type, info.value.error_message, info.value.traceback) == (
        handle.id,
        "ValueError",
        "bad input",
        "Traceback: x",
    )


def test_result_of_a_dead_task_raises_task_dead(dispatcher: Dispatcher, client: redis.Redis, prefix: str) -> None:
    handle = dispatcher.submit("echo", 1)
    record = codec.encode_outcome(codec.Outcome(status="dead", reason="max_retries", error_type="E"))
    client.set(KeySpace(prefix).capability("echo").result(handle.id), record)
    with pytest.raises(TaskDead) as info:
        handle.result(timeout_s=5)
    assert info.value.reason == "max_retries"
    assert handle.status() == "dead"


def test_result_times_out(dispatcher: Dispatcher, no_recheck: float) -> None:
    handle = dispatcher.submit("echo", 1)
    started = time.monotonic()
    with pytest.raises(ResultTimeout):
        handle.result(timeout_s=0.3)
    waited_s = time.monotonic() - started
    print(f"\nresult(timeout_s=0.3) raised after {waited_s:.3f} s")
    # Not before its timeout; and at its timeout, not at the next periodic re-read (an hour away here): the
    # upper bound only separates those two.
    assert 0.3 <= waited_s < 60


def cmdstat_calls(client: redis.Redis, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_result_is_woken_by_the_settlement_without_polling(
    dispatcher: Dispatcher, client: redis.Redis, settings: Settings, no_recheck: float
) -> None:
    handle = dispatcher.submit("echo", 1)
    channel = KeySpace(settings.prefix).capability("echo").channel(handle.id)
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(handle.result(timeout_s=30)), daemon=True)
    waiter.start()
    wait_until(lambda: client.pubsub_numsub(channel)[0][1] == 1, 10, message="result() never subscribed")
    gets_before = cmdstat_calls(client, "get")
    settled_at = time.monotonic()
    settle(client, settings, handle, SUCCEEDED)
    waiter.join(timeout=40)
    # The periodic re-read is an hour away (no_recheck) and the timeout is 30 s: only the announcement woke it.
    assert got == [{"answer": 42}]
    print(f"\nresult() returned {time.monotonic() - settled_at:.4f} s after the settlement")
    assert cmdstat_calls(client, "get") - gets_before <= 3  # one re-read on wake-up, not a polling loop


def test_result_of_a_task_that_keeps_no_result_raises_at_once(dispatcher: Dispatcher, prefix: str) -> None:
    fire_and_forget = dispatcher.submit("echo", 1, store_result=False)
    (batched,) = dispatcher.submit_many([Task(capability="echo", payload=2, store_result=False)])
    for handle in (fire_and_forget, batched):
        started = time.monotonic()
        with pytest.raises(ResultNotStored, match="store_result=False") as info:
            handle.result(timeout_s=5)  # before: ResultTimeout after 5 s (and with no timeout, never)
        assert time.monotonic() - started < 1
        assert handle.id in str(info.value)
        assert handle.status() == "queued"  # it is queued all the same
    assert dispatcher.submit("echo", 3).store_result is True


def test_async_result_of_a_task_that_keeps_no_result_raises_at_once(settings: Settings) -> None:
    async def main() -> None:
        async with AsyncDispatcher(settings) as d:
            handle = await d.submit("echo", 1, store_result=False)
            with pytest.raises(ResultNotStored):
                await asyncio.wait_for(handle.result(timeout_s=5), 1)

    asyncio.run(main())


# ---- errors at the Redis boundary -------------------------------------------------------------------------------


def test_redis_down_at_submit_raises_redis_unavailable_with_a_masked_url(prefix: str) -> None:
    port = free_port()
    url = f"redis://user:secret@127.0.0.1:{port}/0"
    d = Dispatcher(Settings.build(redis_url=url, prefix=prefix, connect_timeout_s=1, retry_attempts=2))
    started = time.monotonic()
    try:
        with pytest.raises(RedisUnavailable) as info:
            d.submit("echo", 1)
    finally:
        d.close()
    print(f"\nsubmit() raised after {time.monotonic() - started:.2f} s (connect_timeout_s=1, retry_attempts=2)")
    message = str(info.value)
    assert f"redis://user:***@127.0.0.1:{port}/0" in message
    assert "secret" not in message
    assert not isinstance(info.value, redis.RedisError)


def test_acl_user_limited_to_its_prefix_works_end_to_end(prefix: str) -> None:
    with RedisServer() as server:
        admin = server.client()
        admin.execute_command(
            "ACL", "SETUSER", "producer", "on", ">pw", f"~{prefix}:*", "&*", "resetchannels", "&*",
            "+ping", "+evalsha", "+set", "+hset", "+zadd", "+xadd", "+script|load", "+sadd", "+smembers", "+get",
            "+hget", "+hmget", "+exists", "+hexists", "+xpending", "+subscribe", "+unsubscribe",
        )  # fmt: skip
        url = f"redis://producer:pw@127.0.0.1:{server.port}/0"
        with Dispatcher(Settings.build(redis_url=url, prefix=prefix)) as d:
            handle = d.submit("echo", {"x": 1})
            assert handle.status() == "queued"
            admin_settings = Settings.build(redis_url=server.url, prefix=prefix)
            settle(admin, admin_settings, handle, SUCCEEDED)
            assert handle.status() == "succeeded"
            assert d.handle(handle.id).result(timeout_s=5) == {"answer": 42}
            with pytest.raises(dispatcher_pkg.RedisError, match=r"NOPERM|no permissions"):
                Dispatcher(Settings.build(redis_url=url, prefix="other"), client=d.client).submit("echo", 1)
        assert admin.xlen(f"{prefix}:{{echo}}:stream") == 0


# ---- asyncio ----------------------------------------------------------------------------------------------------


def test_async_dispatcher_basics(settings: Settings, client: redis.Redis, prefix: str, no_recheck: float) -> None:
    async def main() -> None:
        async with AsyncDispatcher(settings) as d:
            handle = await d.submit("echo", {"x": 1})
            assert (await d.submit("echo", 2, idempotency_key="k")).id == (
                await d.submit("echo", 3, idempotency_key="k")
            ).id
            assert await handle.status() == "queued"
            handles = await d.submit_many([Task(capability="echo", payload=i) for i in range(3)])
            assert len({h.id for h in handles}) == 3
            with pytest.raises(InvalidTask):
                await d.submit("Bad", 1)
            waiter = asyncio.ensure_future(handle.result(timeout_s=30))
            channel = KeySpace(prefix).capability("echo").channel(handle.id)
            deadline = time.monotonic() + 10
            while client.pubsub_numsub(channel)[0][1] != 1:
                assert time.monotonic() < deadline, "result() never subscribed"
                await asyncio.sleep(0.02)
            settled_at = time.monotonic()
            await asyncio.to_thread(settle, client, settings, handle, SUCCEEDED)
            # Woken by the announcement: the periodic re-read is an hour away (no_recheck).
            assert await asyncio.wait_for(waiter, 40) == {"answer": 42}
            print(f"\nasync result() returned {time.monotonic() - settled_at:.4f} s after the settlement")
            assert await handle.status() == "succeeded"
            assert await (await d.handle(handle.id)).result(timeout_s=1) == {"answer": 42}
            with pytest.raises(ResultTimeout):
                await handles[0].result(timeout_s=0.2)

    asyncio.run(main())
    assert client.xlen(KeySpace(prefix).capability("echo").stream) == 4


def test_async_redis_down_raises_redis_unavailable(prefix: str) -> None:
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"

    async def main() -> None:
        async with AsyncDispatcher(Settings.build(redis_url=url, prefix=prefix, retry_attempts=1)) as d:
            with pytest.raises(RedisUnavailable, match=r"\*\*\*") as info:
                await d.submit("echo", 1)
            assert "secret" not in str(info.value)

    asyncio.run(main())


# ---- the module-level submit ------------------------------------------------------------------------------------


def test_importing_dispatcher_connects_to_nothing() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "DISPATCHER_REDIS_URL": "",
        "DISPATCHER_RETRY_ATTEMPTS": "0",
        "DISPATCHER_SOCKET_TIMEOUT_S": "2",
    }
    try:
        code = "import dispatcher, dispatcher.producer.sync as p; assert p._default is None"
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=30)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected while importing
        listener.settimeout(10)
        code = "import dispatcher\ntry:\n    dispatcher.submit('echo', 1)\nexcept dispatcher.RedisError:\n    pass"
        proc = subprocess.Popen([sys.executable, "-c", code], env=env)
        try:
            conn, _ = listener.accept()  # the first submit does connect, to the URL from the environment
            conn.close()
            listener.close()  # later attempts are refused at once
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    finally:
        listener.close()


def test_module_submit_builds_its_default_lazily(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    monkeypatch.setattr(producer, "_default", None)
    monkeypatch.delenv("DISPATCHER_REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("DISPATCHER_PREFIX", prefix)
    monkeypatch.setenv("DISPATCHER_RETRY_ATTEMPTS", "0")
    with pytest.raises(RedisUnavailable):
        dispatcher_pkg.submit("echo", 1)
    assert producer._default is not None
    producer._default.close()

    monkeypatch.setattr(producer, "_default", None)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    try:
        handle = dispatcher_pkg.submit("echo", {"x": 1})
        assert producer._default is not None and producer._default.settings.redis_url == redis_server.url
        assert dispatcher_pkg.submit("echo", 2)._dispatcher is producer._default  # built once
        assert handle.status() == "queued"
        assert client.xlen(f"{prefix}:{{echo}}:stream") == 2
    finally:
        if producer._default is not None:
            producer._default.close()
