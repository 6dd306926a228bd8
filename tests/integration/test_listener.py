"""``result()`` waiters share one pub/sub connection per dispatcher, against a real redis-server: sharing,
connection reuse, unsubscribing, a killed connection, and closing."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from helpers import settle, wait_until

from dispatcher import AsyncDispatcher, Dispatcher, Settings
from dispatcher.producer.subscriptions import RECHECK_S
from dispatcher.store import codec
from dispatcher.store.connection import make_async_client, make_client
from dispatcher.store.keys import KeySpace

DONE = codec.Outcome(status="succeeded", value="done")


def connections(client: redis.Redis, name: str, kind: str | None = None) -> list[dict[str, Any]]:
    """The server's connections named ``name`` (optionally of CLIENT LIST TYPE ``kind``)."""
    return [c for c in client.client_list(_type=kind) if c.get("name") == name]


def numsub(client: redis.Redis, channel: str) -> int:
    return int(client.pubsub_numsub(channel)[0][1])


@pytest.fixture
def name() -> str:
    return "listener-" + uuid.uuid4().hex[:8]


@pytest.fixture
def named(settings: Settings, name: str) -> Iterator[Dispatcher]:
    """A dispatcher whose connections carry a client name of their own, so the server can count them."""
    with Dispatcher(settings, client=make_client(settings, client_name=name)) as d:
        yield d


def wait_in_thread(handle: Any, timeout_s: float = 30) -> tuple[threading.Thread, list[Any]]:
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(handle.result(timeout_s=timeout_s)), daemon=True)
    thread.start()
    return thread, got


def test_sync_waiters_in_many_threads_share_one_pubsub_connection(
    named: Dispatcher, client: redis.Redis, settings: Settings, name: str
) -> None:
    handles = [named.submit("echo", i) for i in range(6)]
    keys = KeySpace(settings.prefix).capability("echo")
    waiting = [wait_in_thread(h) for h in handles]
    for h in handles:
        wait_until(lambda h=h: numsub(client, keys.channel(h.id)) == 1, 10, message="a waiter never subscribed")
    assert len(connections(client, name, "pubsub")) == 1
    for h in handles:
        settle(client, settings, h, DONE)
    for thread, got in waiting:
        thread.join(10)
        assert got == ["done"]


def test_sequential_results_reuse_the_connection_instead_of_opening_one_per_call(
    named: Dispatcher, client: redis.Redis, settings: Settings
) -> None:
    keys = KeySpace(settings.prefix).capability("echo")
    named.submit("echo", 0).result  # noqa: B018 - nothing connects before the first command
    before = int(client.info("stats")["total_connections_received"])
    for i in range(8):
        handle = named.submit("echo", i)
        thread, got = wait_in_thread(handle)
        wait_until(lambda h=handle: numsub(client, keys.channel(h.id)) == 1, 10, message="never subscribed")
        settle(client, settings, handle, DONE)
        thread.join(10)
        assert got == ["done"]
    opened = int(client.info("stats")["total_connections_received"]) - before
    assert opened <= 3, f"{opened} connections opened for 8 waits"  # the pool's, and the one listener connection


def test_a_channel_is_unsubscribed_once_its_waiter_returned(
    named: Dispatcher, client: redis.Redis, settings: Settings
) -> None:
    handle = named.submit("echo", 1)
    channel = KeySpace(settings.prefix).capability("echo").channel(handle.id)
    thread, got = wait_in_thread(handle)
    wait_until(lambda: numsub(client, channel) == 1, 10, message="never subscribed")
    settle(client, settings, handle, DONE)
    thread.join(10)
    assert got == ["done"]
    wait_until(lambda: numsub(client, channel) == 0, 10, message="the finished waiter's channel stayed subscribed")


def test_an_announcement_lost_with_a_killed_connection_is_found_on_resubscribe(
    named: Dispatcher, client: redis.Redis, settings: Settings, name: str
) -> None:
    handle = named.submit("echo", 1)
    channel = KeySpace(settings.prefix).capability("echo").channel(handle.id)
    thread, got = wait_in_thread(handle)
    wait_until(lambda: numsub(client, channel) == 1, 10, message="never subscribed")
    (conn,) = connections(client, name, "pubsub")
    client.client_kill_filter(_id=conn["id"])
    settled_at = time.monotonic()
    settle(client, settings, handle, DONE)  # announced while nobody listens: only a re-read can find it
    thread.join(10)
    assert got == ["done"]
    assert time.monotonic() - settled_at < RECHECK_S / 2, "found by the periodic re-check, not on reconnect"


def test_close_stops_the_reader_and_closes_its_connection(settings: Settings, client: redis.Redis, name: str) -> None:
    d = Dispatcher(settings, client=make_client(settings, client_name=name))
    handle = d.submit("echo", 1)
    thread, got = wait_in_thread(handle)
    wait_until(lambda: connections(client, name, "pubsub"), 10, message="never subscribed")
    settle(client, settings, handle, DONE)
    thread.join(10)
    assert got == ["done"]
    started = time.monotonic()
    d.close()
    assert time.monotonic() - started < 2.0
    assert d.listener._thread is None
    wait_until(lambda: not connections(client, name), 10, message="connections left open after close()")


def test_async_waiters_share_one_pubsub_connection_and_survive_a_killed_one(
    settings: Settings, client: redis.Redis, name: str
) -> None:
    keys = KeySpace(settings.prefix).capability("echo")

    async def main() -> None:
        async with AsyncDispatcher(settings, client=make_async_client(settings, client_name=name)) as d:
            handles = [await d.submit("echo", i) for i in range(20)]
            same = await d.handle(handles[0].id, "echo")
            waiters = [asyncio.ensure_future(h.result(timeout_s=30)) for h in [*handles, same]]
            for h in handles:
                while numsub(client, keys.channel(h.id)) != 1:
                    await asyncio.sleep(0.02)
            assert len(connections(client, name, "pubsub")) == 1
            for h in handles[:10]:
                await asyncio.to_thread(settle, client, settings, h, DONE)
            assert await asyncio.wait_for(asyncio.gather(*waiters[:10]), 10) == ["done"] * 10
            (conn,) = connections(client, name, "pubsub")
            client.client_kill_filter(_id=conn["id"])
            settled_at = time.monotonic()
            for h in handles[10:]:
                await asyncio.to_thread(settle, client, settings, h, DONE)
            assert await asyncio.wait_for(asyncio.gather(*waiters[10:]), 10) == ["done"] * 11
            assert time.monotonic() - settled_at < RECHECK_S / 2
        assert not connections(client, name)

    asyncio.run(main())


def test_a_forked_child_listens_on_a_connection_of_its_own(
    named: Dispatcher, client: redis.Redis, settings: Settings, name: str
) -> None:
    first = named.submit("echo", 1)
    thread, got = wait_in_thread(first)
    wait_until(lambda: connections(client, name, "pubsub"), 10, message="never subscribed")
    handle = named.submit("echo", 2)  # the parent's reader thread is running and its connection is open
    channel = KeySpace(settings.prefix).capability("echo").channel(handle.id)
    parents = numsub(client, channel)  # 1: the parent holds the channel of a task submitted after a result()
    pid = os.fork()
    if pid == 0:  # the child: wait through the inherited dispatcher, exit 0 only on a prompt, right result
        code = 1
        try:
            started = time.monotonic()
            code = 0 if handle.result(timeout_s=20) == "done" and time.monotonic() - started < RECHECK_S else 2
        finally:
            os._exit(code)
    status = None
    try:
        wait_until(lambda: numsub(client, channel) == parents + 1, 10, message="the child never subscribed")
        assert len(connections(client, name, "pubsub")) == 2  # the parent's and the child's own
        settle(client, settings, handle, DONE)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        if status is None:  # the child is still running: end it
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    settle(client, settings, first, DONE)
    thread.join(10)
    assert got == ["done"]


def get_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_get", {}).get("calls", 0))


def test_a_producer_that_never_waits_holds_nothing(named: Dispatcher, client: redis.Redis, name: str) -> None:
    for i in range(5):
        named.submit("echo", i)
    assert connections(client, name)  # connected ...
    assert not connections(client, name, "pubsub")  # ... but never subscribed


def test_after_a_result_new_tasks_are_held_and_an_early_announcement_needs_no_read(
    named: Dispatcher, client: redis.Redis, settings: Settings
) -> None:
    keys = KeySpace(settings.prefix).capability("echo")
    first = named.submit("echo", 0)
    settle(client, settings, first, DONE)
    assert first.result(timeout_s=10) == "done"  # a result() call: from now on, submitted tasks are held
    handle = named.submit("echo", 1)
    channel = keys.channel(handle.id)
    wait_until(lambda: numsub(client, channel) == 1, 10, message="the new task's channel was not held")
    settle(client, settings, handle, DONE)
    wait_until(lambda: numsub(client, channel) == 0, 10, message="the announced channel stayed subscribed")
    gets = get_calls(client)
    assert handle.result(timeout_s=10) == "done"
    assert get_calls(client) == gets, "result() read the result although its announcement was kept"
    assert handle.result(timeout_s=10) == "done"  # again: read afresh, the hold was released
    assert get_calls(client) == gets + 1


def test_a_held_task_settled_while_waited_on_returns_its_result(
    named: Dispatcher, client: redis.Redis, settings: Settings
) -> None:
    named.submit("echo", 0).result  # noqa: B018
    named.listener.expect()
    handles = [named.submit("echo", i) for i in range(5)]
    keys = KeySpace(settings.prefix).capability("echo")
    for h in handles:
        wait_until(lambda h=h: numsub(client, keys.channel(h.id)) == 1, 10, message="not held")
    waiting = [wait_in_thread(h) for h in handles]
    for h in handles:
        settle(client, settings, h, DONE)
    for thread, got in waiting:
        thread.join(10)
        assert got == ["done"]
    for h in handles:
        wait_until(lambda h=h: numsub(client, keys.channel(h.id)) == 0, 10, message="stayed subscribed")


def test_a_dropped_handle_releases_its_held_channel(named: Dispatcher, client: redis.Redis, settings: Settings) -> None:
    named.listener.expect()
    handle = named.submit("echo", 1)
    channel = KeySpace(settings.prefix).capability("echo").channel(handle.id)
    wait_until(lambda: numsub(client, channel) == 1, 10, message="not held")
    del handle
    gc.collect()
    wait_until(lambda: numsub(client, channel) == 0, 10, message="the dropped handle's channel stayed subscribed")


def test_an_async_dispatcher_closes_promptly_while_announcements_arrive(
    settings: Settings, client: redis.Redis, name: str
) -> None:
    # Its reader is kept busy by held channels; redis-py's pub/sub read has been seen to lose the close's
    # cancellation (Python 3.11) and read on for ever.

    async def main() -> tuple[float, bool]:
        d = AsyncDispatcher(settings, client=make_async_client(settings, client_name=name))
        d.listener.expect()
        handles = [await d.submit("echo", i) for i in range(300)]

        def announce() -> None:
            for h in handles:
                settle(client, settings, h, DONE)

        thread = threading.Thread(target=announce, daemon=True)
        thread.start()
        try:
            await asyncio.sleep(0.05)
            reader = d.listener._reader
            assert reader is not None
            started = time.monotonic()
            await asyncio.wait_for(d.aclose(), 10)
            return time.monotonic() - started, reader.done()
        finally:
            await asyncio.to_thread(thread.join, 30)

    for _ in range(5):
        took, stopped = asyncio.run(main())
        assert stopped, "aclose() returned with the reader still running"
        assert took < 3.0
    wait_until(lambda: not connections(client, name), 10, message="connections left open after aclose()")
