"""Handlers and entries that would harm a worker: the unexpected from a handler, outcomes that cannot be built,
and raw entries with absurd fields. Each must end as a failure of that task with a clear error, the worker
unharmed and its slot free (the worker is driven in-process, in burst mode)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import redis

from dispatcher import Dispatcher, Settings, Task, TaskDead
from dispatcher.store import codec
from dispatcher.store.keys import GROUP, KeySpace
from workers import Registry, Worker

DEADLINE_S = 60.0


def drain(settings: Settings, registry: Registry, capabilities: list[str], concurrency: int = 4) -> Worker:
    worker = Worker(registry, capabilities, settings, concurrency=concurrency, burst=True, upkeep=False)
    asyncio.run(asyncio.wait_for(worker.run(), DEADLINE_S))
    return worker


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


def raise_keyboard_interrupt(task: Task) -> None:
    raise KeyboardInterrupt


async def araise_keyboard_interrupt(task: Task) -> None:
    raise KeyboardInterrupt


def raise_system_exit(task: Task) -> None:
    raise SystemExit(3)


def raise_unprintable(task: Task) -> None:
    raise Unprintable


async def araise_generator_exit(task: Task) -> None:
    raise GeneratorExit


@pytest.mark.parametrize(
    ("handler", "error_type"),
    [
        (raise_keyboard_interrupt, "KeyboardInterrupt"),
        (araise_keyboard_interrupt, "KeyboardInterrupt"),
        (raise_system_exit, "SystemExit"),
        (raise_unprintable, "Unprintable"),
        (araise_generator_exit, "GeneratorExit"),
    ],
    ids=["sync-KeyboardInterrupt", "async-KeyboardInterrupt", "SystemExit", "unprintable", "GeneratorExit"],
)
def test_a_handler_raising_the_unexpected_fails_its_task_and_the_worker_goes_on(
    settings: Settings, dispatcher: Dispatcher, handler: Callable[[Task], Any], error_type: str
) -> None:
    registry = Registry()
    registry.register("bad", handler)
    registry.register("good", lambda task: task.payload)
    bad = dispatcher.submit("bad", None, max_retries=0)
    good = dispatcher.submit_many([Task(capability="good", payload=i) for i in range(5)])
    worker = drain(settings, registry, ["bad", "good"])
    with pytest.raises(TaskDead) as caught:
        bad.result(timeout_s=5)
    assert (caught.value.reason, caught.value.error_type) == ("max_retries", error_type)
    if handler is raise_unprintable:
        assert caught.value.error_message == "<unprintable Unprintable>"
    assert [h.result(timeout_s=5) for h in good] == [0, 1, 2, 3, 4]
    assert not worker.slots.held and worker.slots.strays == 0


def test_a_value_that_cannot_be_encoded_fails_the_task_clearly(settings: Settings, dispatcher: Dispatcher) -> None:
    registry = Registry()
    registry.register("weird", lambda task: object())
    handle = dispatcher.submit("weird", None)
    worker = drain(settings, registry, ["weird"])
    with pytest.raises(TaskDead) as caught:
        handle.result(timeout_s=5)
    assert caught.value.reason == "result_unencodable" and "cannot be encoded" in caught.value.error_message
    assert not worker.slots.held


def test_running_out_of_memory_while_recording_an_outcome_fails_only_the_attempt(
    settings: Settings, dispatcher: Dispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in chaos scenario 11: another task's allocation under RLIMIT_AS made msgpack fail to encode an
    innocent task's result, which was dead-lettered as worker_error. The task is retried instead."""
    encode = codec.encode_success
    calls: list[int] = []

    def out_of_memory_once(*args: Any) -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("Unable to allocate internal buffer.")
        return encode(*args)

    monkeypatch.setattr(codec, "encode_success", out_of_memory_once)
    registry = Registry()
    registry.register("echo", lambda task: task.payload)
    handle = dispatcher.submit("echo", "innocent", max_retries=1)
    fast = Settings.build(**{**settings.model_dump(), "backoff_base_s": 0.0, "backoff_max_s": 0.0})
    worker = drain(fast, registry, ["echo"])
    assert handle.result(timeout_s=5) == "innocent"
    assert len(calls) == 2  # the failed attempt, then the retry that succeeded
    assert not worker.slots.held


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "reason", "message"),
    [
        ({1: "integer key"}, "result_unencodable", "cannot be read back"),
        ({"x": {2.5: "float key"}}, "result_unencodable", "cannot be read back"),
        (nested(70), "result_unencodable", "nesting deeper than 64"),
        ("x" * 3000, "result_too_large", "over the limit of 2048"),
    ],
    ids=["int-keys", "float-keys", "nesting-70", "too-large"],
)
def test_a_result_the_producer_could_not_read_is_never_stored(
    settings: Settings, dispatcher: Dispatcher, value: Any, reason: str, message: str
) -> None:
    small = Settings.build(**{**settings.model_dump(), "max_payload_bytes": 1024})  # results up to 2048 bytes
    registry = Registry()
    registry.register("returns", lambda task: value)
    with Dispatcher(small) as d:
        handle = d.submit("returns", None)
        drain(small, registry, ["returns"])
        with pytest.raises(TaskDead) as caught:
            handle.result(timeout_s=5)
    assert caught.value.reason == reason and message in caught.value.error_message, caught.value


def test_a_huge_error_message_is_stored_bounded(settings: Settings, dispatcher: Dispatcher) -> None:
    def shout(task: Task) -> None:
        raise ValueError("x" * 5_000_000)

    registry = Registry()
    registry.register("shout", shout)
    handle = dispatcher.submit("shout", None, max_retries=0)
    drain(settings, registry, ["shout"])
    with pytest.raises(TaskDead) as caught:
        handle.result(timeout_s=5)
    assert len(caught.value.error_message) < 9000 and caught.value.error_message.endswith("(5000000 characters)")


ABSURD = {
    "max_retries 10**15": ({"max_retries": 10**15}, {}, "'max_retries' is not from 0 to 1000"),
    "max_retries -1": ({"max_retries": -1}, {}, "'max_retries' is not from 0 to 1000"),
    "attempt 2**70": ({}, {"attempt": str(2**70)}, "'attempt' is not an integer"),
    "timeout_s NaN": ({"timeout_s": float("nan")}, {}, "'timeout_s' is not a number of seconds"),
    "timeout_s inf": ({"timeout_s": float("inf")}, {}, "'timeout_s' is not a number of seconds"),
    "timeout_s -5": ({"timeout_s": -5.0}, {}, "'timeout_s' is not a number of seconds"),
    "expires_at NaN": ({"expires_at": float("nan")}, {}, "'expires_at' is not a finite number"),
    "id with a newline": ({"id": "t-1\nERROR forged log line"}, {}, "'id' is missing or not 1-128 printable"),
}


@pytest.mark.parametrize("case", list(ABSURD))
def test_raw_entries_with_absurd_fields_are_dead_lettered_with_the_field_named(
    settings: Settings, client: redis.Redis, prefix: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    body_extra, field_extra, message = ABSURD[case]
    keys = KeySpace(prefix).capability("echo")
    client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    body = {"id": "t-absurd", "payload": 1, "submitted_at": 1.0, **body_extra}
    fields = {"v": "1", "task": msgpack.packb(body, use_bin_type=True), "attempt": "1", "reclaims": "0", **field_extra}
    client.xadd(keys.stream, fields)  # type: ignore[arg-type]
    registry = Registry()
    registry.register("echo", lambda task: task.payload)
    with caplog.at_level("WARNING"):
        worker = drain(settings, registry, ["echo"])
    ((_, letter),) = client.xrange(keys.dead)
    assert letter[b"reason"] == b"decode_error"
    error = msgpack.unpackb(letter[b"error"], raw=False)
    assert message in error["message"], error
    assert client.xlen(keys.stream) == 0 and not worker.slots.held
    assert not any("ERROR forged" in line for line in caplog.text.splitlines() if not line.startswith("WARNING")), (
        "an untrusted string reached the log unescaped"
    )
