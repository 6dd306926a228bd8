"""The wire codec: round trips, compact encoding, and every way a hostile or broken entry is refused."""

from __future__ import annotations

from typing import Any

import fakeredis
import msgpack
import pytest

from dispatcher import DecodeError, InvalidTask, PayloadTooLarge, Task
from dispatcher.store import codec, streams
from dispatcher.store.gateway import Gateway

LIMIT = 64 * 1024


def entry(blob: bytes, **extra: bytes) -> dict[bytes, bytes]:
    fields = {b"v": codec.FORMAT_VERSION, b"task": blob, b"attempt": b"1", b"reclaims": b"0"}
    fields.update({k.encode(): v for k, v in extra.items()})
    return fields


def body_entry(body: dict[str, Any]) -> dict[bytes, bytes]:
    return entry(msgpack.packb(body, use_bin_type=True))


def test_round_trip_with_every_option() -> None:
    task = Task(
        capability="llm.chat",
        payload={"prompt": "hi", "n": [1, 2.5, None, True], "raw": b"\x00\xff"},
        max_retries=7,
        timeout_s=12.5,
        idempotency_key="order-42",
        headers={"trace": "abc"},
        not_before=1_700_000_000.5,
        expires_at=1_800_000_000.0,
    )
    blob = codec.encode_task(task, LIMIT)
    delivery = codec.decode_entry("llm.chat", "1-0", entry(blob, attempt=b"3", reclaims=b"2"), LIMIT)
    assert delivery.task == task.model_copy(update={"attempt": 3})
    assert (delivery.entry_id, delivery.blob, delivery.attempt, delivery.reclaims) == ("1-0", blob, 3, 2)


def test_round_trip_of_a_minimal_task_leaves_defaults_out() -> None:
    task = Task(capability="echo", payload="x")
    blob = codec.encode_task(task, LIMIT)
    assert set(msgpack.unpackb(blob)) == {"id", "payload", "submitted_at"}
    assert codec.decode_entry("echo", "1-0", entry(blob), LIMIT).task == task


def test_entry_fields_without_attempt_or_reclaims_default_to_first_delivery() -> None:
    blob = codec.encode_task(Task(capability="echo"), LIMIT)
    delivery = codec.decode_entry("echo", "1-0", {b"v": b"1", b"task": blob}, LIMIT)
    assert (delivery.attempt, delivery.reclaims, delivery.task.attempt) == (1, 0, 1)


def test_entry_fields_layout() -> None:
    assert codec.entry_fields(b"B", 2, 1) == [b"v", b"1", b"task", b"B", b"attempt", 2, b"reclaims", 1]


def test_unencodable_payload_is_invalid_task() -> None:
    with pytest.raises(InvalidTask, match="cannot be encoded"):
        codec.encode_task(Task(capability="echo", payload={"f": object()}), LIMIT)


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({1: "a"}, "int is not allowed for map key"),
        ({"ok": {2.5: "a"}}, "float is not allowed for map key"),
        (nested(70), "nesting deeper than 64"),
    ],
    ids=["int-key", "float-key", "nesting-70"],
)
def test_a_payload_the_worker_would_refuse_is_invalid_task_at_encoding(payload: Any, match: str) -> None:
    task = Task(capability="echo", payload=payload)
    with pytest.raises(DecodeError):  # what a worker's decoder does with it: a dead letter (decode_error)
        codec.decode_entry("echo", "1-0", entry(msgpack.packb({**GOOD, "payload": payload})), LIMIT)
    with pytest.raises(InvalidTask, match=f"would refuse it: .*{match}") as info:
        codec.encode_task(task, LIMIT)
    assert type(info.value) is InvalidTask


def test_the_deepest_payload_the_worker_takes_is_accepted_and_one_more_level_is_not() -> None:
    task = Task(capability="echo", payload=nested(64))  # the payload is level 1 (wire format 3.2)
    blob = codec.encode_task(task, LIMIT)
    assert codec.decode_entry("echo", "1-0", entry(blob), LIMIT).task == task
    with pytest.raises(InvalidTask, match="nesting deeper than 64"):
        codec.encode_task(Task(capability="echo", payload=nested(65)), LIMIT)


def test_oversized_task_is_payload_too_large() -> None:
    with pytest.raises(PayloadTooLarge, match="over the limit of 2048"):
        codec.encode_task(Task(capability="echo", payload="x" * 2048), 2048)


# ---- decode errors: the entry's fields ----------------------------------------------------------------------

GOOD = {"id": "T1", "payload": None, "submitted_at": 1.0}


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({b"task": msgpack.packb(GOOD)}, "unknown format version None"),
        ({b"v": b"9", b"task": msgpack.packb(GOOD)}, "unknown format version b'9'"),
        ({b"v": b"1", b"task": msgpack.packb({**GOOD, "store_result": False})}, "'store_result' needs format v"),
        ({b"v": b"2", b"task": msgpack.packb({**GOOD, "store_result": 0})}, "'store_result' has the wrong type"),
        ({b"v": b"2", b"task": msgpack.packb({**GOOD, "priority": 5})}, "'priority' needs format version 3"),
        ({b"v": b"3", b"task": msgpack.packb({**GOOD, "priority": 10})}, "'priority' is not from 0 to 9"),
        ({b"v": b"3", b"task": msgpack.packb({**GOOD, "priority": "9"})}, "'priority' has the wrong type"),
        ({b"v": b"3", b"task": msgpack.packb({**GOOD, "priority": True})}, "'priority' has the wrong type"),
        ({b"v": b"1"}, "no 'task' field"),
        ({b"v": b"1", b"task": msgpack.packb(GOOD), b"attempt": b"x"}, "'attempt' is not an integer"),
        ({b"v": b"1", b"task": msgpack.packb(GOOD), b"attempt": b"0"}, "'attempt' is below 1"),
        ({b"v": b"1", b"task": msgpack.packb(GOOD), b"reclaims": b"-1"}, "'reclaims' is below 0"),
        ({b"v": b"1", b"task": msgpack.packb(GOOD), b"attempt": str(2**70).encode()}, "'attempt' is not an integer"),
        ({b"v": b"1", b"task": msgpack.packb(GOOD), b"attempt": b"1000001"}, "'attempt' is above 1000000"),
        ({b"v": b"1", b"task": msgpack.packb([1, 2])}, "not a msgpack map"),
    ],
)
def test_bad_entry_fields(fields: dict[bytes, bytes], match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        codec.decode_entry("echo", "1-0", fields, LIMIT)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"payload": 1, "submitted_at": 1.0}, "'id' is missing"),
        ({**GOOD, "id": 5}, "'id' is missing or not 1-128 printable"),
        ({**GOOD, "id": ""}, "'id' is missing or not 1-128 printable"),
        ({**GOOD, "id": "x" * 129}, "'id' is missing or not 1-128 printable"),
        ({**GOOD, "id": "forged\nERROR log line"}, "'id' is missing or not 1-128 printable"),
        ({**GOOD, "id": "has space"}, "'id' is missing or not 1-128 printable"),
        ({**GOOD, "submitted_at": "yesterday"}, "'submitted_at' is not a finite number"),
        ({**GOOD, "submitted_at": True}, "'submitted_at' is not a finite number"),
        ({**GOOD, "submitted_at": float("nan")}, "'submitted_at' is not a finite number"),
        ({**GOOD, "max_retries": 10**15}, "'max_retries' is not from 0 to 1000"),
        ({**GOOD, "max_retries": -1}, "'max_retries' is not from 0 to 1000"),
        ({**GOOD, "timeout_s": float("nan")}, "'timeout_s' is not a number of seconds"),
        ({**GOOD, "timeout_s": float("inf")}, "'timeout_s' is not a number of seconds"),
        ({**GOOD, "timeout_s": -5}, "'timeout_s' is not a number of seconds"),
        ({**GOOD, "expires_at": float("nan")}, "'expires_at' is not a finite number"),
        ({**GOOD, "not_before": float("-inf")}, "'not_before' is not a finite number"),
        ({**GOOD, "max_retries": "3"}, "'max_retries' has the wrong type"),
        ({**GOOD, "max_retries": True}, "'max_retries' has the wrong type"),
        ({**GOOD, "timeout_s": "5"}, "'timeout_s' has the wrong type"),
        ({**GOOD, "idempotency_key": 7}, "'idempotency_key' has the wrong type"),
        ({**GOOD, "not_before": [1]}, "'not_before' has the wrong type"),
        ({**GOOD, "expires_at": "never"}, "'expires_at' has the wrong type"),
        ({**GOOD, "headers": ["a"]}, "'headers' is not a map"),
        ({**GOOD, "headers": {"a": 1}}, "'headers' is not a map"),
        ({**GOOD, "code": "import os"}, r"unknown task fields \['code'\]"),
    ],
)
def test_bad_task_body(body: dict[str, Any], match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        codec.decode_entry("echo", "1-0", body_entry(body), LIMIT)


def test_the_capability_set_yields_only_valid_names() -> None:
    # Entries are decoded for capabilities a worker serves or the reaper found in the set: the set is the gate.
    fake = fakeredis.FakeRedis()
    fake.sadd("p:capabilities", "echo", "Bad Cap", "x{y}", b"\xff", "llm.chat")
    assert Gateway(fake, "redis://test").run(streams.known_capabilities("p:capabilities")) == ["echo", "llm.chat"]


# ---- decode errors: the msgpack itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        pytest.param(b"\xc1", "not valid msgpack: FormatError", id="never-used-byte"),
        pytest.param(b"", "not valid msgpack", id="empty"),
        pytest.param(msgpack.packb(GOOD)[:-3], "incomplete input", id="truncated"),
        pytest.param(msgpack.packb(GOOD) + b"\x00", "ExtraData", id="trailing-garbage"),
        pytest.param(b"\xdd\xff\xff\xff\xff", "exceeds max_array_len", id="huge-array32"),
        pytest.param(b"\xdf\xff\xff\xff\xff", "exceeds max_map_len", id="huge-map32"),
        pytest.param(b"\xdb\xff\xff\xff\xff" + b"x" * 10, "not valid msgpack", id="huge-str32"),
        pytest.param(b"\xc6\xff\xff\xff\xff" + b"x" * 10, "not valid msgpack", id="huge-bin32"),
        pytest.param(b"\x91" * 66 + b"\xc0", "nesting deeper than 64", id="deep-lists"),
        pytest.param(b"\x81\xa1k" * 66 + b"\xc0", "nesting deeper than 64", id="deep-maps"),
        pytest.param(b"\x91" * 60_000 + b"\xc0", "nest|not valid msgpack", id="very-deep"),
        pytest.param(b"\xa2\xff\xfe", "UnicodeDecodeError", id="invalid-utf8"),
        pytest.param(b"\x81\xa2\xc3\x28\x01", "UnicodeDecodeError", id="invalid-utf8-key"),
        pytest.param(msgpack.packb({1: 2}), "not allowed for map key", id="int-map-key"),
        pytest.param(msgpack.packb(msgpack.ExtType(5, b"x")), "ext type 5", id="ext-5"),
        pytest.param(b"\x81\xa1a\x91\xd4\xf9\x00", "ext type -7", id="nested-ext"),
        pytest.param(msgpack.packb({"a": msgpack.Timestamp(1, 0)}), r"ext type -1 \(timestamp\)", id="timestamp"),
    ],
)
def test_unpack_refuses(data: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        codec.unpack(data, 100_000)


def test_unpack_refuses_over_size_before_parsing() -> None:
    with pytest.raises(DecodeError, match="1025 bytes is over the limit of 1024"):
        codec.unpack(msgpack.packb("x" * 1022), 1024)


def test_unpack_accepts_exactly_the_depth_limit() -> None:
    assert codec.unpack(b"\x91" * 65 + b"\xc0", 1024) is not None


def test_garbage_task_blob_in_an_entry_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="not valid msgpack"):
        codec.decode_entry("echo", "1-0", entry(b"\xc1garbage"), LIMIT)


# ---- result records and worker records ------------------------------------------------------------------------


def test_outcome_round_trip_succeeded() -> None:
    out = codec.Outcome(status="succeeded", value={"answer": [42]}, attempt=2, worker="w1", finished_at=5.0)
    assert codec.decode_outcome(codec.encode_outcome(out), LIMIT) == out


def test_outcome_round_trip_dead() -> None:
    out = codec.Outcome(
        status="dead",
        error_type="ValueError",
        error_message="bad",
        traceback="Traceback...",
        reason="max_retries",
        attempt=4,
        worker="w2",
        finished_at=6.0,
    )
    assert codec.decode_outcome(codec.encode_outcome(out), LIMIT) == out


def test_outcome_finished_at_defaults_to_now() -> None:
    assert codec.decode_outcome(codec.encode_outcome(codec.Outcome(status="failed")), LIMIT).finished_at > 1e9


def test_unencodable_result_value_is_invalid_task() -> None:
    with pytest.raises(InvalidTask, match="result cannot be encoded"):
        codec.encode_outcome(codec.Outcome(status="succeeded", value=object()))


@pytest.mark.parametrize("body", [[1], {"value": 1}, {"status": 3}, {"status": "failed", "error": "boom"}], ids=repr)
def test_bad_outcome_records(body: Any) -> None:
    with pytest.raises(DecodeError):
        codec.decode_outcome(msgpack.packb(body), LIMIT)


def test_worker_record_round_trip() -> None:
    record = codec.WorkerRecord(
        consumer="host-1-abc",
        host="host",
        pid=123,
        capabilities=("a", "b"),
        concurrency=4,
        inflight=1,
        version="0.1.0",
        started_at=1.0,
        last_seen=2.0,
        circuits={"a": "closed", "b": "open"},
    )
    assert codec.decode_worker(codec.encode_worker(record)) == record


@pytest.mark.parametrize("data", [msgpack.packb({"consumer": "x"}), msgpack.packb([1]), b"\xc1"], ids=repr)
def test_bad_worker_records(data: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode_worker(data)


# ---- format version 3: priority -----------------------------------------------------------------------------


def test_a_task_with_a_priority_is_version_3_and_round_trips() -> None:
    task = Task(capability="echo", payload=1, priority=7, store_result=False)
    assert codec.version_of(task) == codec.PRIORITY_VERSION == b"3"
    blob = codec.encode_task(task, LIMIT)
    got = codec.decode_entry("echo", "1-0", codec.entry_fields(blob, version=b"3"), LIMIT).task
    assert (got.priority, got.store_result) == (7, False)


def test_a_task_without_a_priority_keeps_its_older_version() -> None:
    assert codec.version_of(Task(capability="echo")) == b"1"
    assert codec.version_of(Task(capability="echo", store_result=False)) == b"2"
    assert codec.version_of(Task(capability="echo", priority=0)) == b"3"
