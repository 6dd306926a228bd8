"""The task model: ids, capability names, options."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from dispatcher import Task
from dispatcher.task import check_capability, new_task_id


def test_ids_are_unique_26_char_crockford() -> None:
    ids = {new_task_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == 26 and set(i) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for i in ids)


def test_ids_sort_by_time() -> None:
    first = new_task_id()
    deadline = time.monotonic() + 5
    later = new_task_id()
    while later[:10] == first[:10] and time.monotonic() < deadline:  # the first 10 chars are the millisecond
        later = new_task_id()
    assert first[:10] < later[:10]
    assert first < later


def test_id_time_prefix_is_the_epoch_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    task_id = new_task_id()
    after = time.time_ns() // 1_000_000
    value = 0
    for c in task_id:
        value = value * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(c)
    assert before <= value >> 80 <= after


def test_id_is_the_millisecond_then_the_random_bits_in_crockford_base32(monkeypatch: pytest.MonkeyPatch) -> None:
    random = bytes(range(246, 256))
    monkeypatch.setattr("dispatcher.task.os.urandom", lambda n: random[:n])
    monkeypatch.setattr("dispatcher.task.time.time_ns", lambda: 1_700_000_000_123_456_789)
    expected = 1_700_000_000_123 << 80 | int.from_bytes(random, "big")
    digits = []
    for _ in range(26):  # the value, 5 bits a digit, most significant first
        digits.append("0123456789ABCDEFGHJKMNPQRSTVWXYZ"[expected & 31])
        expected >>= 5
    assert new_task_id() == "".join(reversed(digits))


@pytest.mark.parametrize("name", ["a", "llm.chat", "gpu-a100_x", "0", "x" * 64])
def test_valid_capabilities(name: str) -> None:
    assert check_capability(name) == name
    assert Task(capability=name).capability == name


@pytest.mark.parametrize("name", ["", "Upper", "has space", "x" * 65, "a{b}", "a:b", "a*", "é", "a\n", 5, None])
def test_invalid_capabilities(name: object) -> None:
    with pytest.raises(ValueError, match="capability"):
        check_capability(name)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Task(capability=name)  # type: ignore[arg-type]


def test_defaults() -> None:
    task = Task(capability="echo")
    assert (task.payload, task.max_retries, task.timeout_s, task.attempt, task.headers) == (None, 3, None, 1, {})
    assert abs(task.submitted_at - time.time()) < 60


@pytest.mark.parametrize(
    "options",
    [
        {"unknown": 1},
        {"max_retries": -1},
        {"timeout_s": 0},
        {"idempotency_key": ""},
        {"id": ""},
        {"id": "has space"},
        {"id": "x" * 129},
        {"attempt": 0},
        {"headers": {"a": 1}},
    ],
    ids=repr,
)
def test_invalid_options(options: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Task(capability="echo", **options)  # type: ignore[arg-type]


def test_task_is_frozen() -> None:
    task = Task(capability="echo")
    with pytest.raises(ValidationError):
        task.payload = 1  # type: ignore[misc]


@pytest.mark.parametrize("priority", [-1, 10, True, "5", 2.0])
def test_priority_out_of_range_or_not_an_integer_is_refused(priority: object) -> None:
    with pytest.raises(ValidationError, match="priority"):
        Task(capability="echo", priority=priority)
